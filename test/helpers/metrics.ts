/** The value of one series of a /metrics text (`name{labels}` exactly as printed), or undefined. */
export function valueOf (text: string, series: string): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}
