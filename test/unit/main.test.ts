/**
 * `npm start`'s command line: --help prints the usage and exits without starting anything; any
 * other argument is refused (exit 2) instead of being ignored by a server that then starts.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { SERVER_NODE_FLAGS } from '../../scripts/lib/procs.js'

function run (...args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    // ports that would be taken if it started anyway: then it fails fast, and this test with it
    env: { ...process.env, MQIM_MQTT_PORT: '1', MQIM_HTTP_PORT: '1' }
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('npm start arguments', () => {
  test.each(['--help', '-h'])('%s prints the usage and exits 0', (flag) => {
    const r = run(flag)
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Usage: npm start')
    expect(r.stdout).toContain('MQIM_MQTT_PORT')
  })

  test.each([['--port', '5'], ['serve']])('%s is refused with the usage (exit 2)', (...args) => {
    const r = run(...args)
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('Usage: npm start')
  })
})

describe('the node options the server runs with', () => {
  const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts
  test.each(['start', 'start:prod'])('npm run %s passes the same ones as the scripts that start servers', (name) => {
    const script = scripts[name] ?? ''
    const flags = script.split(' ').filter(w => w.startsWith('--') && w !== '--import')
    expect(flags).toEqual([...SERVER_NODE_FLAGS])
  })

  test.each([['Dockerfile', /^CMD \["node", (.*)"dist\/main\.js"\]$/m], ['deploy/mqim.service', /^ExecStart=\/usr\/bin\/node (.*)\/opt\/mqim\/dist\/main\.js$/m]])('%s starts node with them', (file, line) => {
    const m = line.exec(readFileSync(file, 'utf8'))
    expect(m).not.toBeNull()
    const flags = (m?.[1] ?? '').split(/[\s,"]+/).filter(w => w !== '')
    expect(flags).toEqual([...SERVER_NODE_FLAGS])
  })

  test('node accepts them', () => {
    const r = spawnSync(process.execPath, [...SERVER_NODE_FLAGS, '-e', 'process.exit(0)'], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
  })
})
