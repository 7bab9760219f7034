/** The login form: user id, password, device id. */
import { useEffect, useRef, useState } from 'preact/hooks'
import type { Credentials } from '../session.js'
import type { LoginState } from '../store.js'

export function LoginView ({ login, onLogin }: { login: LoginState, onLogin: (creds: Credentials) => void }) {
  const [user, setUser] = useState(login.user)
  const [password, setPassword] = useState('')
  const [device, setDevice] = useState(login.device)
  const userInput = useRef<HTMLInputElement>(null)
  const passwordInput = useRef<HTMLInputElement>(null)
  useEffect(() => { (user === '' ? userInput : passwordInput).current?.focus() }, [])

  const submit = (e: Event): void => {
    e.preventDefault()
    const creds = { user: user.trim().toLowerCase(), password, device: device.trim() }
    if (creds.user !== '' && creds.password !== '' && creds.device !== '') onLogin(creds)
  }

  return (
    <main class='login' data-testid='login-view'>
      <form class='card' data-testid='login-form' autoComplete='on' onSubmit={submit}>
        <h1>mqim</h1>
        <p class='hint'>Chat over MQTT, right in the browser.</p>
        <label>User id
          <input
            ref={userInput} data-testid='login-user' name='username' autoComplete='username' autoCapitalize='none' spellcheck={false} required
            value={user} onInput={e => { setUser(e.currentTarget.value) }}
          />
        </label>
        <label>Password
          <input
            ref={passwordInput} data-testid='login-password' name='password' type='password' autoComplete='current-password' required
            value={password} onInput={e => { setPassword(e.currentTarget.value) }}
          />
        </label>
        <label>Device id
          <input
            data-testid='login-device' name='device' autoCapitalize='none' spellcheck={false} pattern='[A-Za-z0-9_\-]{1,64}' required
            value={device} onInput={e => { setDevice(e.currentTarget.value) }}
          />
        </label>
        <button data-testid='login-submit' type='submit' disabled={login.busy}>{login.busy ? 'Connecting…' : 'Log in'}</button>
        {login.error !== null && <p class='error' data-testid='login-error' role='alert'>{login.error}</p>}
      </form>
    </main>
  )
}
