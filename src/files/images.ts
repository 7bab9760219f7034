/**
 * Images (sharp): the width and height of an upload, and a thumbnail of it. The thumbnail is made
 * from the decoded pixels and written as WebP without any of the original's metadata (EXIF, GPS,
 * XMP, ICC), turned upright as the EXIF orientation says. Width and height are the upright ones.
 * Decoding is bounded by a pixel limit; at most `concurrency` run at once (each holding one image's
 * bytes, read only once its turn has come), and at most 16 × concurrency wait, holding nothing
 * (the rest are refused: the message goes out without a thumbnail).
 */
import sharp from 'sharp'

/** Types sharp decodes (animated ones: the first frame). */
export const THUMBNAIL_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/avif', 'image/tiff'])

export interface ImageInfo {
  w: number
  h: number
  thumb: { bytes: Buffer, w: number, h: number, mime: 'image/webp' }
}

export class ImageWorker {
  private running = 0
  private readonly waiting: Array<() => void> = []

  constructor (private readonly options: { concurrency: number, maxPixels: number, thumbMaxPx: number }) {}

  /**
   * Width, height and a thumbnail of the bytes `load` reads (called once this image's turn has
   * come); null when they are not a decodable image (of the type `mime`, when given: the bytes
   * must start as that format does, so nothing else, SVG say, reaches a decoder); 'busy' when too
   * many wait already.
   */
  async process (load: () => Promise<Buffer | null>, mime?: string): Promise<ImageInfo | 'busy' | null> {
    if (this.running >= this.options.concurrency) {
      if (this.waiting.length >= this.options.concurrency * 16) return 'busy'
      await new Promise<void>(resolve => this.waiting.push(resolve))
    } else {
      this.running++
    }
    try {
      const bytes = await load()
      if (bytes === null || (mime !== undefined && !startsAs(bytes, mime))) return null
      return await this.run(bytes)
    } catch {
      return null
    } finally {
      const next = this.waiting.shift()
      if (next !== undefined) next()
      else this.running--
    }
  }

  private async run (bytes: Buffer): Promise<ImageInfo> {
    const image = sharp(bytes, { limitInputPixels: this.options.maxPixels, failOn: 'error' })
    const meta = await image.metadata()
    if (meta.width === undefined || meta.height === undefined) throw new Error('no dimensions')
    // orientations 5-8 swap width and height
    const swapped = (meta.orientation ?? 1) >= 5
    const w = swapped ? meta.height : meta.width
    const h = swapped ? meta.width : meta.height
    const max = this.options.thumbMaxPx
    // sharp writes no metadata unless asked (withMetadata / keepExif): the thumbnail has none
    const { data, info } = await sharp(bytes, { limitInputPixels: this.options.maxPixels, failOn: 'error' })
      .rotate()
      .resize({ width: max, height: max, fit: 'inside', withoutEnlargement: true })
      .webp({ quality: 75 })
      .toBuffer({ resolveWithObject: true })
    return { w, h, thumb: { bytes: data, w: info.width, h: info.height, mime: 'image/webp' } }
  }
}

/** Whether the bytes begin as files of this image type do (its signature). */
function startsAs (b: Buffer, mime: string): boolean {
  const ascii = (from: number, text: string): boolean => b.subarray(from, from + text.length).toString('latin1') === text
  switch (mime) {
    case 'image/png': return b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
    case 'image/jpeg': return b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff
    case 'image/gif': return ascii(0, 'GIF87a') || ascii(0, 'GIF89a')
    case 'image/webp': return ascii(0, 'RIFF') && ascii(8, 'WEBP')
    case 'image/tiff': return ascii(0, 'II*\u0000') || ascii(0, 'MM\u0000*')
    case 'image/avif': return ascii(4, 'ftyp') && ['avif', 'avis', 'mif1', 'msf1'].some(brand => ascii(8, brand))
    default: return false
  }
}
