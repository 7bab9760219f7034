/** Formatting for the views: errors, times, avatar colours, user lists. */

export function describeError (err: unknown): string {
  if (typeof err === 'string') return err
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    const msg = err.message.replace(/^Error: /, '')
    if (typeof code === 'string' && !msg.includes(code)) return `${msg} (${code})`
    return msg
  }
  return String(err)
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' })

/** "14:03" today, "Mar 4" otherwise. */
export function shortTime (ts: number): string {
  const d = new Date(ts)
  const now = new Date()
  return d.toDateString() === now.toDateString() ? timeFmt.format(d) : dayFmt.format(d)
}

export function clockTime (ts: number): string {
  return timeFmt.format(new Date(ts))
}

export function dayLabel (ts: number): string {
  const d = new Date(ts)
  const now = new Date()
  if (d.toDateString() === now.toDateString()) return 'Today'
  const y = new Date(now.getTime() - 86400000)
  if (d.toDateString() === y.toDateString()) return 'Yesterday'
  return new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric', year: d.getFullYear() === now.getFullYear() ? undefined : 'numeric' }).format(d)
}

/** A stable colour for an avatar. */
export function colorFor (name: string): string {
  let hash = 0
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0
  return `hsl(${Math.abs(hash) % 360} 55% 48%)`
}

/** "bob, carol  dave" -> ["bob", "carol", "dave"] (lower-cased, deduplicated). */
export function parseUserList (text: string): string[] {
  return [...new Set(text.split(/[\s,;]+/).map(s => s.trim().toLowerCase()).filter(s => s.length > 0))]
}
