/** The message box: Enter sends, Shift+Enter makes a new line, the box grows with its text. */
import { useEffect, useRef } from 'preact/hooks'

export function Composer ({ onSend }: { onSend: (text: string) => void }) {
  const input = useRef<HTMLTextAreaElement>(null)
  useEffect(() => { if (matchMedia('(min-width: 721px)').matches) input.current?.focus() }, [])

  /** Fits the height to the text (through the CSSOM, which the CSP allows), up to 140 px. */
  const grow = (): void => {
    const t = input.current
    if (t === null) return
    t.style.height = 'auto'
    t.style.height = `${Math.min(t.scrollHeight + 2, 140)}px`
  }
  const submit = (): void => {
    const t = input.current
    const text = t?.value.replace(/\s+$/, '') ?? ''
    if (t === null || text.trim() === '') return
    t.value = ''
    grow()
    onSend(text)
  }

  return (
    <form class='composer' data-testid='composer' onSubmit={e => { e.preventDefault(); submit() }}>
      <textarea
        ref={input} data-testid='composer-input' rows={1} placeholder='Message' enterkeyhint='send' onInput={grow}
        onKeyDown={e => {
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault()
            submit()
          }
        }}
      />
      <button data-testid='composer-send' type='submit'>Send</button>
    </form>
  )
}
