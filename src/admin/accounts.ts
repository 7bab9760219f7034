/** Account administration shared by the admin HTTP API and the `npm run admin` tool. */
import { z } from 'zod'
import { ImError } from '../errors.js'
import { DisplayText, UserId } from '../protocol/schemas.js'
import { StoreConflictError, type MetadataStore, type UserRecord } from '../store/types.js'
import { generateApiKey, generatePassword, hashApiKey, hashPassword } from '../auth/secrets.js'

export const CreateUserInput = z.object({
  id: UserId,
  password: z.string().min(8, 'at least 8 characters').max(256).optional(),
  displayName: DisplayText.optional()
}).strict()

export const CreateBotInput = z.object({
  id: UserId,
  displayName: DisplayText.optional()
}).strict()

export const ResetInput = z.object({
  password: z.string().min(8, 'at least 8 characters').max(256).optional()
    .meta({ description: 'users only: the new password (absent: a generated one); refused for a bot, whose API key is always generated' })
}).strict()

export interface PublicUser { id: string, kind: UserRecord['kind'], displayName: string, disabled: boolean, createdAt: number }

function publicUser (u: UserRecord): PublicUser {
  return { id: u.id, kind: u.kind, displayName: u.displayName, disabled: u.disabled, createdAt: u.createdAt }
}

export async function createUser (meta: MetadataStore, input: z.infer<typeof CreateUserInput>): Promise<{ user: PublicUser, password: string }> {
  const password = input.password ?? generatePassword()
  const record: UserRecord = { id: input.id, kind: 'user', displayName: input.displayName ?? input.id, secretHash: await hashPassword(password), disabled: false, createdAt: Date.now(), groupInvites: 'anyone' }
  try {
    await meta.userCreate(record)
  } catch (err) {
    if (err instanceof StoreConflictError) throw new ImError('CONFLICT', `user ${input.id} already exists`)
    throw err
  }
  return { user: publicUser(record), password }
}

export async function createBot (meta: MetadataStore, input: z.infer<typeof CreateBotInput>): Promise<{ user: PublicUser, apiKey: string }> {
  const apiKey = generateApiKey()
  const record: UserRecord = { id: input.id, kind: 'bot', displayName: input.displayName ?? input.id, secretHash: hashApiKey(apiKey), disabled: false, createdAt: Date.now(), groupInvites: 'anyone' }
  try {
    await meta.userCreate(record)
  } catch (err) {
    if (err instanceof StoreConflictError) throw new ImError('CONFLICT', `user ${input.id} already exists`)
    throw err
  }
  return { user: publicUser(record), apiKey }
}

export async function setDisabled (meta: MetadataStore, id: string, disabled: boolean): Promise<void> {
  if (!(await meta.userSetDisabled(id, disabled))) throw new ImError('NOT_FOUND', `no such user: ${id}`)
}

/**
 * New password (users: the given one, or a generated one) or new API key (bots: always generated;
 * a password given for a bot is refused, nothing changes); the old one stops working at once.
 */
export async function resetSecret (meta: MetadataStore, id: string, password?: string): Promise<{ password?: string, apiKey?: string }> {
  if (password !== undefined) {
    const checked = ResetInput.shape.password.safeParse(password)
    if (!checked.success) throw new ImError('BAD_REQUEST', `password: ${checked.error.issues[0]?.message ?? 'invalid'}`)
  }
  const user = await meta.userGet(id)
  if (user === null) throw new ImError('NOT_FOUND', `no such user: ${id}`)
  if (user.kind === 'bot') {
    if (password !== undefined) throw new ImError('BAD_REQUEST', `password: ${id} is a bot; it logs in with a generated API key, not a password (leave password out to get a new API key)`)
    const apiKey = generateApiKey()
    await meta.userSetSecret(id, hashApiKey(apiKey))
    return { apiKey }
  }
  const pw = password ?? generatePassword()
  await meta.userSetSecret(id, await hashPassword(pw))
  return { password: pw }
}

export async function listUsers (meta: MetadataStore): Promise<PublicUser[]> {
  return (await meta.userList()).map(publicUser)
}

export async function getUser (meta: MetadataStore, id: string): Promise<PublicUser> {
  const user = await meta.userGet(id)
  if (user === null) throw new ImError('NOT_FOUND', `no such user: ${id}`)
  return publicUser(user)
}

/**
 * One page of users (and bots) by id in byte order, after `cursor`: each user is on exactly one
 * page of a walk, however users are added meanwhile (those added behind the cursor are not seen).
 * One keyset read of the store (MetadataStore.userPage) of `limit` + 1 users: the one beyond the
 * page says whether another follows.
 */
export async function userPage (meta: MetadataStore, page: { cursor?: string, limit: number, kind?: UserRecord['kind'] }): Promise<{ users: PublicUser[], next: string | null }> {
  const found = await meta.userPage({ after: page.cursor ?? null, limit: page.limit + 1, ...(page.kind === undefined ? {} : { kind: page.kind }) })
  const users = found.slice(0, page.limit).map(publicUser)
  return { users, next: found.length > page.limit ? users.at(-1)?.id ?? null : null }
}
