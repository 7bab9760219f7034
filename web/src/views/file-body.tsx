/**
 * The body of a message of kind `file`: an image with a thumbnail shows it (a click opens the
 * full-size image over the page; Escape or a click closes it); any other file is a chip with its
 * name and size that downloads it.
 */
import { createContext } from 'preact'
import { useContext, useEffect, useState } from 'preact/hooks'
import type { FileDescriptor } from '../../../src/client/index.js'
import { byteSize, type Files } from '../files.js'

export const FilesContext = createContext<Files | null>(null)

export function FileBody ({ conv, file }: { conv: string, file: FileDescriptor }) {
  const files = useContext(FilesContext)
  const [thumb, setThumb] = useState<string | null>(null)
  const [full, setFull] = useState<string | null>(null)
  const [failed, setFailed] = useState(false)
  useEffect(() => {
    if (files === null || file.thumb === undefined) return
    let live = true
    files.url(conv, file.id, 'thumb').then(u => { if (live) setThumb(u) }, () => { if (live) setFailed(true) })
    return () => { live = false }
  }, [files, conv, file.id])
  const open = async (): Promise<void> => {
    if (files === null) return
    try {
      const url = await files.url(conv, file.id, 'original')
      if (file.thumb !== undefined) {
        setFull(url)
      } else {
        const a = document.createElement('a')
        a.href = url
        a.download = file.name
        a.rel = 'noopener'
        a.click()
      }
    } catch {
      setFailed(true)
    }
  }
  if (file.thumb !== undefined && !failed) {
    return (
      <>
        <button class='file-thumb' type='button' data-testid='msg-thumb-open' aria-label={`Open ${file.name}`} title={`${file.name} · ${byteSize(file.size)}`} onClick={() => { void open() }}>
          {thumb !== null
            ? <img data-testid='msg-thumb' src={thumb} alt={file.name} width={file.thumb.w} height={file.thumb.h} />
            : <span class='file-thumb-wait' data-testid='msg-thumb-wait'>{file.name}</span>}
        </button>
        {full !== null && <Viewer url={full} file={file} onClose={() => { setFull(null) }} />}
      </>
    )
  }
  return (
    <button class='file-chip' type='button' data-testid='msg-file' onClick={() => { void open() }} title={`Download ${file.name}`}>
      <span class='file-icon' aria-hidden='true'>{kindLabel(file)}</span>
      <span class='file-name' data-testid='msg-file-name'>{file.name}</span>
      <span class='file-size'>{byteSize(file.size)}</span>
    </button>
  )
}

function Viewer ({ url, file, onClose }: { url: string, file: FileDescriptor, onClose: () => void }) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent): void => { if (e.key === 'Escape') onClose() }
    document.addEventListener('keydown', onKey)
    return () => { document.removeEventListener('keydown', onKey) }
  }, [])
  return (
    <div class='file-viewer' data-testid='file-viewer' role='dialog' aria-label={file.name} onClick={onClose}>
      <img data-testid='file-viewer-img' src={url} alt={file.name} />
      <span class='file-viewer-caption'>{file.name} · {file.w ?? '?'}×{file.h ?? '?'} · {byteSize(file.size)}</span>
    </div>
  )
}

/** PDF, TXT, ZIP …: the name's extension, else the type's subtype (at most 4 letters). */
function kindLabel (file: FileDescriptor): string {
  const ext = /\.([A-Za-z0-9]{1,4})$/.exec(file.name)?.[1]
  return (ext ?? file.mime.split('/')[1] ?? 'file').slice(0, 4).toUpperCase()
}
