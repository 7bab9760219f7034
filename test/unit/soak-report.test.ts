/**
 * The soak's reading of a node's Prometheus histogram between two scrapes (scripts/soak/report.ts):
 * what it says of the last minute's server-side send latency.
 */
import { histogramBuckets, quantileBetween } from '../../scripts/soak/report.js'
import { GcTrace } from '../../scripts/soak/metrics.js'

const scrape = (counts: Record<string, number>, labels = ''): string =>
  ['# HELP mqim_send_commit_seconds x', '# TYPE mqim_send_commit_seconds histogram',
    ...Object.entries(counts).map(([le, n]) => `mqim_send_commit_seconds_bucket{${labels}le="${le}"} ${n}`),
    'mqim_send_commit_seconds_sum 1', 'mqim_other_bucket{le="0.01"} 999'].join('\n')

describe('soak report: histogram quantiles between two scrapes', () => {
  test('reads the cumulative buckets of one histogram, summing label sets, ignoring others', () => {
    const text = scrape({ 0.01: 2, 0.1: 5, '+Inf': 6 }, 'op="a",') + '\n' + scrape({ 0.01: 1, 0.1: 1, '+Inf': 1 }, 'op="b",')
    const b = histogramBuckets(text, 'mqim_send_commit_seconds')
    expect([...b.entries()].sort((x, y) => x[0] - y[0])).toEqual([[0.01, 3], [0.1, 6], [Number.POSITIVE_INFINITY, 7]])
    expect(histogramBuckets(null, 'mqim_send_commit_seconds').size).toBe(0)
    expect(histogramBuckets('mqim_send_commit_seconds_bucket{le="x"} 3\nmqim_send_commit_seconds_bucket{le="0.1"} nope', 'mqim_send_commit_seconds').size).toBe(0)
  })

  test('interpolates inside the bucket of the rank, over what was counted in between only', () => {
    const before = histogramBuckets(scrape({ 0.01: 100, 0.05: 100, 0.1: 100, '+Inf': 100 }), 'mqim_send_commit_seconds')
    // in between: 50 under 10 ms, 40 in 10-50 ms, 10 in 50-100 ms
    const after = histogramBuckets(scrape({ 0.01: 150, 0.05: 190, 0.1: 200, '+Inf': 200 }), 'mqim_send_commit_seconds')
    expect(quantileBetween(before, after, 0.5)).toEqual({ ms: 10, n: 100 })
    // rank 99: the 9th of the 10 in 50-100 ms
    expect(quantileBetween(before, after, 0.99)).toEqual({ ms: 95, n: 100 })
    expect(quantileBetween(before, after, 0.7)).toEqual({ ms: 30, n: 100 })
  })

  test('a rank in +Inf is the highest finite bound, marked; nothing in between is null', () => {
    const before = histogramBuckets(scrape({ 0.1: 0, '+Inf': 0 }), 'mqim_send_commit_seconds')
    const after = histogramBuckets(scrape({ 0.1: 90, '+Inf': 100 }), 'mqim_send_commit_seconds')
    expect(quantileBetween(before, after, 0.99)).toEqual({ ms: 100, n: 100, above: true })
    expect(quantileBetween(after, after, 0.99)).toBeNull()
    // a histogram of +Inf only tells nothing
    const onlyInf = histogramBuckets(scrape({ '+Inf': 5 }), 'mqim_send_commit_seconds')
    expect(quantileBetween(new Map(), onlyInf, 0.5)).toBeNull()
  })

  test('a node restarted between the scrapes (a bucket went down): what it counted since', () => {
    const before = histogramBuckets(scrape({ 0.01: 5, 0.1: 1000, '+Inf': 1000 }), 'mqim_send_commit_seconds')
    // since the restart: 10 under 10 ms, 10 in 10-100 ms (the lowest bucket went up, the others down)
    const after = histogramBuckets(scrape({ 0.01: 10, 0.1: 20, '+Inf': 20 }), 'mqim_send_commit_seconds')
    expect(quantileBetween(before, after, 0.5)).toEqual({ ms: 10, n: 20 })
    expect(quantileBetween(before, after, 0.99)).toEqual({ ms: 98.2, n: 20 })
  })
})

describe('soak: a node\'s --trace-gc lines', () => {
  const lines = [
    '[4242:0x7f0000000f00]      676 ms: Scavenge 8.1 (9.0) -> 7.9 (10.0) MB, 0.91 / 0.00 ms  (average mu = 1.000, current mu = 1.000) allocation failure;',
    '[4242:0x3b6fcf90]     1200 ms: Scavenge 20.1 (30.0) -> 18.9 (31.0) MB, 1.20 / 0.00 ms  (average mu = 1.000, current mu = 1.000) allocation failure;',
    '[4242:0x3b6fcf90]    52944 ms: Mark-Compact 271.3 (301.1) -> 156.4 (292.6) MB, 19.39 / 0.09 ms  (+ 73.1 ms in 67 steps since start of marking, biggest step 9.5 ms, walltime since start of marking 221 ms) (average mu = 0.998, current mu = 0.999) finalize incremental marking via stack guard; GC in old space requested',
    '[4242:0x3b6fcf90]    62193 ms: Mark-Compact (reduce) 187.8 (292.6) -> 150.1 (264.3) MB, pooled: 0 MB, 26.67 / 0.13 ms  (average mu = 0.997, current mu = 0.993) memory reducer',
    '[4242:0x3b6fcf90]    63000 ms: Scavenge 160.0 (270.0) -> 151.0 (270.0) MB, 2.00 / 0.00 ms  (average mu = 0.997, current mu = 0.993) allocation failure;'
  ]

  test('the main isolate\'s (most GCs) heap after its last Mark-Compact, their count and main-thread time (pause + marking steps); other lines are not consumed', () => {
    const gc = new GcTrace()
    expect(gc.lastAfterMb).toBeNull()
    expect(gc.majorGcMs).toBe(0)
    for (const l of lines) expect(gc.line(l)).toBe(true)
    expect(gc.line('{"level":30,"msg":"listening"}')).toBe(false)
    expect(gc.line('[4242:0x3b6fcf90] not a gc line')).toBe(false)
    expect(gc.lastAfterMb).toBe(150.1)
    expect(gc.majorGcs).toBe(2)
    expect(gc.majorGcMs).toBeCloseTo(19.39 + 73.1 + 26.67, 5)
  })
})
