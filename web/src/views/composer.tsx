/**
 * The message box: Enter sends, Shift+Enter makes a new line, the box grows with its text. Typing
 * `@` offers the members to mention (arrows choose, Enter or Tab inserts, Escape closes); the
 * view reports every change of the text (for "typing…"). Files come in through the attach button or
 * pasted into the box (dropping them anywhere on the chat is handled by the chat view).
 */
import { useEffect, useRef, useState } from 'preact/hooks'
import { MENTION_ALL, mentionQuery, mentionToken, suggestions } from '../mentions.js'

interface Props {
  /** Who may be mentioned (user ids, '@all'). */
  candidates: readonly string[]
  /** Sending is not possible (the text box says why in its placeholder). */
  disabledReason?: string
  onSend: (text: string) => void
  /** The text changed (typed, emptied, sent). */
  onText: (text: string) => void
  /** Files chosen or pasted (absent: attaching is not possible). */
  onFiles?: (files: File[]) => void
}

/** The open suggestion list: which `@word` it completes (from its `@` to the caret), the options, the highlighted one. */
interface Picker { start: number, end: number, options: string[], active: number }

const PICKER_ID = 'mention-picker'

export function Composer ({ candidates, disabledReason, onSend, onText, onFiles }: Props) {
  const input = useRef<HTMLTextAreaElement>(null)
  const picker$ = useRef<HTMLInputElement>(null)
  const [picker, setPicker] = useState<Picker | null>(null)
  useEffect(() => {
    if (matchMedia('(min-width: 721px)').matches) input.current?.focus()
    // leaving the chat ends my "typing…" there
    return () => { onText('') }
  }, [])

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
    if (t === null || text.trim() === '' || disabledReason !== undefined) return
    t.value = ''
    grow()
    setPicker(null)
    onSend(text)
    onText('')
  }
  /** Opens, updates or closes the suggestions for the `@word` at the caret. */
  const suggest = (): void => {
    const t = input.current
    if (t === null) return
    const caret = t.selectionStart ?? t.value.length
    const q = t.selectionStart === t.selectionEnd ? mentionQuery(t.value, caret) : null
    const options = q === null ? [] : suggestions(candidates, q.query)
    if (q === null || options.length === 0) {
      setPicker(null)
      return
    }
    const kept = picker?.options[picker.active]
    setPicker({ start: q.start, end: caret, options, active: Math.max(0, kept === undefined ? 0 : options.indexOf(kept)) })
  }
  const pick = (mention: string): void => {
    const t = input.current
    if (t === null || picker === null) return
    const token = `${mentionToken(mention)} `
    t.value = t.value.slice(0, picker.start) + token + t.value.slice(picker.end)
    const caret = picker.start + token.length
    t.setSelectionRange(caret, caret)
    t.focus()
    setPicker(null)
    grow()
    onText(t.value)
  }
  const onKeyDown = (e: KeyboardEvent): void => {
    if (picker !== null) {
      const n = picker.options.length
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault()
        setPicker({ ...picker, active: (picker.active + (e.key === 'ArrowDown' ? 1 : n - 1)) % n })
        return
      }
      if ((e.key === 'Enter' || e.key === 'Tab') && !e.shiftKey && !e.isComposing) {
        e.preventDefault()
        const chosen = picker.options[picker.active]
        if (chosen !== undefined) pick(chosen)
        return
      }
      if (e.key === 'Escape') {
        e.preventDefault()
        setPicker(null)
        return
      }
    }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault()
      submit()
    }
  }

  return (
    <form class='composer' data-testid='composer' onSubmit={e => { e.preventDefault(); submit() }}>
      {picker !== null && (
        <ul class='mention-picker' id={PICKER_ID} role='listbox' aria-label='Mention someone' data-testid='mention-picker'>
          {picker.options.map((o, i) => (
            <li
              key={o} id={`${PICKER_ID}-${i}`} role='option' aria-selected={i === picker.active} class={i === picker.active ? 'active' : undefined}
              data-testid='mention-option' data-user={o}
              // mousedown, not click: the text box keeps the focus (and its caret)
              onMouseDown={e => { e.preventDefault(); pick(o) }}
            >
              {mentionToken(o)}{o === MENTION_ALL && <small> everyone here</small>}
            </li>
          ))}
        </ul>
      )}
      <textarea
        ref={input} data-testid='composer-input' rows={1} enterkeyhint='send' aria-label='Message'
        placeholder={disabledReason ?? 'Message'} disabled={disabledReason !== undefined}
        aria-autocomplete='list' aria-controls={picker !== null ? PICKER_ID : undefined}
        aria-activedescendant={picker !== null ? `${PICKER_ID}-${picker.active}` : undefined}
        onInput={e => { grow(); onText(e.currentTarget.value); suggest() }}
        onKeyDown={onKeyDown}
        onKeyUp={e => { if (['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) suggest() }}
        onClick={suggest}
        onBlur={() => { setPicker(null) }}
        onPaste={e => {
          const pasted = [...(e.clipboardData?.files ?? [])]
          if (onFiles === undefined || pasted.length === 0) return
          e.preventDefault()
          onFiles(pasted)
        }}
      />
      <input
        ref={picker$} type='file' multiple hidden data-testid='composer-file-input'
        onChange={e => { const chosen = [...(e.currentTarget.files ?? [])]; e.currentTarget.value = ''; if (chosen.length > 0) onFiles?.(chosen) }}
      />
      <button
        class='attach' data-testid='composer-attach' type='button' aria-label='Attach a file' title='Attach a file (or paste or drop one)'
        disabled={onFiles === undefined} onClick={() => { picker$.current?.click() }}
      >+
      </button>
      <button data-testid='composer-send' type='submit' disabled={disabledReason !== undefined}>Send</button>
    </form>
  )
}
