/**
 * Latency histogram with 1 % wide logarithmic buckets (from 1 µs to minutes), cheap to record
 * and to merge across worker processes. Percentiles are accurate to about 1 %.
 */
const GROWTH = 1.01
const LOG_GROWTH = Math.log(GROWTH)
const BUCKETS = 2400 // 1.01^2400 µs ≈ 2.3e10 µs: far beyond any timeout

export class Histogram {
  counts: number[]
  total = 0
  max = 0
  sum = 0

  constructor (counts?: number[]) {
    this.counts = counts ?? new Array<number>(BUCKETS).fill(0)
  }

  /** Records one value in milliseconds. */
  add (ms: number): void {
    const us = Math.max(ms * 1000, 1)
    const i = Math.min(BUCKETS - 1, Math.floor(Math.log(us) / LOG_GROWTH))
    this.counts[i] = (this.counts[i] ?? 0) + 1
    this.total++
    this.sum += ms
    if (ms > this.max) this.max = ms
  }

  merge (other: HistogramData): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] = (this.counts[i] ?? 0) + (other.counts[i] ?? 0)
    this.total += other.total
    this.sum += other.sum
    if (other.max > this.max) this.max = other.max
  }

  /** The value below which `p` percent of the recorded values lie, in ms (NaN if empty). */
  percentile (p: number): number {
    if (this.total === 0) return NaN
    const rank = Math.ceil((p / 100) * this.total)
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i] ?? 0
      if (seen >= rank) return Math.min(this.max, GROWTH ** (i + 0.5) / 1000)
    }
    return this.max
  }

  toData (): HistogramData {
    return { counts: this.counts, total: this.total, max: this.max, sum: this.sum }
  }
}

export interface HistogramData { counts: number[], total: number, max: number, sum: number }

export function median (values: number[]): number {
  const v = values.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const mid = v.length >> 1
  const upper = v[mid] ?? NaN
  return v.length % 2 === 1 ? upper : ((v[mid - 1] ?? NaN) + upper) / 2
}
