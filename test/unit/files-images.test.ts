/** ImageWorker: thumbnails without metadata, and the bound on images in work and waiting. */
import sharp from 'sharp'
import { ImageWorker } from '../../src/files/images.js'

async function jpegWithGps (w: number, h: number, orientation?: number): Promise<Buffer> {
  const image = sharp({ create: { width: w, height: h, channels: 3, background: '#446688' } })
  return await (orientation === undefined ? image : image.withMetadata({ orientation }))
    .withExif({ IFD0: { Make: 'Cam' }, IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '1/1 2/1 3/1' } })
    .jpeg().toBuffer()
}

describe('ImageWorker', () => {
  test('width, height (upright) and a WebP thumbnail without EXIF', async () => {
    const worker = new ImageWorker({ concurrency: 2, maxPixels: 10_000_000, thumbMaxPx: 100 })
    const plain = await worker.process(async () => await jpegWithGps(400, 200), 'image/jpeg')
    if (plain === null || plain === 'busy') throw new Error('no thumbnail')
    expect(plain).toMatchObject({ w: 400, h: 200, thumb: { w: 100, h: 50, mime: 'image/webp' } })
    expect((await sharp(plain.thumb.bytes).metadata()).exif).toBeUndefined()
    // EXIF orientation 6 (rotated 90°): upright it is 200 x 400
    const rotated = await worker.process(async () => await jpegWithGps(400, 200, 6))
    expect(rotated).toMatchObject({ w: 200, h: 400, thumb: { w: 50, h: 100 } })
    // small images are not enlarged; not an image, or too many pixels: null
    expect(await worker.process(async () => await jpegWithGps(40, 30))).toMatchObject({ thumb: { w: 40, h: 30 } })
    expect(await worker.process(async () => Buffer.from('not an image'))).toBeNull()
    const tiny = new ImageWorker({ concurrency: 1, maxPixels: 1000, thumbMaxPx: 100 })
    expect(await tiny.process(async () => await jpegWithGps(400, 200))).toBeNull()
  })

  test('bytes that do not start as the announced type are not decoded: an SVG or a PNG sent as image/jpeg', async () => {
    const worker = new ImageWorker({ concurrency: 1, maxPixels: 10_000_000, thumbMaxPx: 64 })
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f00' } }).png().toBuffer()
    // without a type sharp would decode both
    expect(await worker.process(async () => svg)).toMatchObject({ w: 10, h: 10 })
    for (const mime of ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/tiff', 'image/avif']) expect(await worker.process(async () => svg, mime)).toBeNull()
    expect(await worker.process(async () => png, 'image/jpeg')).toBeNull()
    expect(await worker.process(async () => png, 'image/png')).toMatchObject({ w: 8, h: 8 })
  })

  test('at most `concurrency` load and decode at once; 16 x concurrency wait without loading; beyond, refused at once', async () => {
    const worker = new ImageWorker({ concurrency: 1, maxPixels: 10_000_000, thumbMaxPx: 64 })
    const image = await jpegWithGps(100, 100)
    let release: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    let loads = 0
    const first = worker.process(async () => { loads++; await gate; return image })
    const waiting = Array.from({ length: 16 }, async () => await worker.process(async () => { loads++; return image }))
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(loads).toBe(1)
    let refusedLoad = false
    expect(await worker.process(async () => { refusedLoad = true; return image })).toBe('busy')
    expect(refusedLoad).toBe(false)
    release()
    expect(await first).not.toBeNull()
    for (const w of await Promise.all(waiting)) expect(w).toMatchObject({ w: 100, h: 100 })
    expect(loads).toBe(17)
  })
})
