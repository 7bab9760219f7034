/**
 * The README's five-minute walk-through works as written: scripts/walkthrough.sh takes each command
 * from README.md (only the ports change), runs it against `npm start` on the embedded default, and
 * checks every step; see the script for the steps.
 */
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const TIMEOUT_MS = 240_000

interface Run { status: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

function runScript (): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [path.join(ROOT, 'scripts', 'walkthrough.sh')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8') })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
    // The script stops its own server on any exit; SIGTERM lets it do so if it hangs.
    const timer = setTimeout(() => child.kill('SIGTERM'), TIMEOUT_MS - 10_000)
    child.on('error', reject)
    child.on('close', (status, signal) => {
      clearTimeout(timer)
      resolve({ status, signal, stdout, stderr })
    })
  })
}

test('the README walk-through runs as written: mosquitto_pub/mosquitto_sub, then the mqtt.js script', async () => {
  const run = await runScript()
  const report = `exit status ${String(run.status)}${run.signal === null ? '' : ` (${run.signal})`}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`
  expect({ status: run.status, report }).toMatchObject({ status: 0 })
  // bob's mosquitto_sub got alice's message, once
  expect(run.stdout.match(/^im\/u\/bob\/m \{.*"seq":1,.*"from":"alice".*"body":"Hi Bob!"\}$/gm)).toHaveLength(1)
  // and the mqtt.js script's exchange went through
  expect(run.stdout).toContain('bob:   got seq 2 from alice: Hello from mqtt.js!')
  expect(run.stdout).toContain('alice: bob has read up to seq 2')
  expect(run.stderr).toContain('walkthrough: all steps passed')
}, TIMEOUT_MS)
