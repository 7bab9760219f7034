/**
 * Checked by the typechecker (`npm test` runs tsc over test/ before jest), not run: the two clocks
 * of src/clocks.ts cannot stand in for each other, so the places that read one (the sequencer's
 * and UsersElsewhere's link age: monotonic; Delivery's order window: wall) cannot be wired to the
 * other, in server.ts or anywhere. Each `@ts-expect-error` fails the typecheck if its line
 * compiles, which it would if a brand were dropped or a wiring swapped. (Options typed as plain
 * numbers accept either clock: the ones that read a clock are typed with the one they need.)
 */
import type { BrokerBackends } from '../../src/broker/backends.js'
import type { SequencerOptions } from '../../src/im/sequencer.js'
import type { UsersElsewhereOptions } from '../../src/broker/users-elsewhere.js'
import type { OrderOptions } from '../../src/im/delivery.js'
import { monotonicNow, WALL_NEVER, wallNow } from '../../src/clocks.js'

export function wirings (backends: BrokerBackends): unknown[] {
  return [
    // the wirings server.ts makes
    { peersSince: backends.linkUpSince } satisfies Pick<SequencerOptions, 'peersSince'>,
    { linkSince: backends.linkUpSince } satisfies Pick<UsersElsewhereOptions, 'linkSince'>,
    { listeningSince: backends.connectedSince } satisfies Pick<OrderOptions, 'listeningSince'>,
    // swapped
    // @ts-expect-error the wall clock where the link's age is read on the monotonic one
    { peersSince: backends.connectedSince } satisfies Pick<SequencerOptions, 'peersSince'>,
    // @ts-expect-error the wall clock where the link's age is read on the monotonic one
    { linkSince: backends.connectedSince } satisfies Pick<UsersElsewhereOptions, 'linkSince'>,
    // @ts-expect-error the monotonic clock where times are compared with stored (wall-clock) ones
    { listeningSince: backends.linkUpSince } satisfies Pick<OrderOptions, 'listeningSince'>,
    // @ts-expect-error a wall clock as the sequencer's monotonic one
    { clock: wallNow } satisfies Pick<SequencerOptions, 'clock'>,
    // @ts-expect-error a wall clock as UsersElsewhere's monotonic one
    { now: wallNow } satisfies Pick<UsersElsewhereOptions, 'now'>,
    // @ts-expect-error plain numbers say neither
    { peersSince: () => performance.now() } satisfies Pick<SequencerOptions, 'peersSince'>,
    // @ts-expect-error the monotonic clock as the one messages are stamped with
    { now: monotonicNow } satisfies Pick<SequencerOptions, 'now'>,
    // @ts-expect-error "not now" on one clock is not "not now" on the other
    { peersSince: () => WALL_NEVER } satisfies Pick<SequencerOptions, 'peersSince'>,
    { now: wallNow } satisfies Pick<SequencerOptions, 'now'>,
    { clock: monotonicNow } satisfies Pick<SequencerOptions, 'clock'>
  ]
}
