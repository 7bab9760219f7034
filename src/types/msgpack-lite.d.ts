declare module 'msgpack-lite' {
  export function encode (value: unknown): Buffer
  export function decode (buffer: Buffer | Uint8Array): unknown
}
