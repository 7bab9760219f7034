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
   * come); null when they are not a decodable image, or too many wait already.
   */
  async process (load: () => Promise<Buffer | null>): Promise<ImageInfo | null> {
    if (this.running >= this.options.concurrency) {
      if (this.waiting.length >= this.options.concurrency * 16) return null
      await new Promise<void>(resolve => this.waiting.push(resolve))
    } else {
      this.running++
    }
    try {
      const bytes = await load()
      return bytes === null ? null : await this.run(bytes)
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
