/**
 * Which Web Push endpoints mqim may POST to (src/im/push.ts webPushEndpointProblem): the default
 * allowed hosts, canonical URLs only (one endpoint, one spelling), the default port unless a rule
 * names one, and the tricks that would turn an allowed name into another request.
 */
import { readFileSync } from 'node:fs'
import { webPushEndpointProblem } from '../../src/im/push.js'

const defaults = (JSON.parse(readFileSync(new URL('../../config/default.json', import.meta.url), 'utf8')) as { push: { webPush: Parameters<typeof webPushEndpointProblem>[1] } }).push.webPush

test('the push services of the default list are allowed, as browsers give their endpoints', () => {
  for (const endpoint of [
    'https://fcm.googleapis.com/fcm/send/dGhpcyBpcyBub3QgYSByZWFsIHRva2Vu:APA91b',
    'https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk',
    'https://wns2-par02p.notify.windows.com/w/?token=BQYAAAB',
    'https://web.push.apple.com/QGuQyavXutnMH5qEKw6_BZ'
  ]) expect(webPushEndpointProblem(endpoint, defaults)).toBeNull()
})

test('anything else is refused with the reason', () => {
  const refused: Array<[string, RegExp]> = [
    ['https://%66cm.googleapis.com/fcm/send/x', /canonical/],
    ['https:fcm.googleapis.com/x', /canonical/],
    ['https://FCM.googleapis.com/x', /canonical/],
    ['https://fcm.googleapis.com:443/x', /canonical/],
    ['https://fcm.googleapis.com./x', /not one of/],
    ['https://fcm.googleapis.com:8443/x', /not one of/],
    ['https://fcm.googleapis.com:65535/x', /not one of/],
    ['http://fcm.googleapis.com/x', /https/],
    ['https://user:pw@fcm.googleapis.com/x', /credentials/],
    ['https://fcm.googleapis.com.evil.example/x', /not one of/],
    ['https://evil.example/fcm.googleapis.com', /not one of/],
    ['https://push.services.mozilla.com.evil.example/x', /not one of/],
    ['https://169.254.169.254/latest/meta-data', /not one of/],
    ['https://[::1]/x', /not one of/],
    ['https://2130706433/x', /canonical/],
    ['not a url', /not a URL/],
    ['', /not a URL/]
  ]
  for (const [endpoint, why] of refused) expect([endpoint, webPushEndpointProblem(endpoint, defaults)]).toEqual([endpoint, expect.stringMatching(why)])
})

test('rules: a port written allows that port, :* any port; http only with allowHttp', () => {
  const config = { ...defaults, allowedHosts: ['127.0.0.1:8080', 'push.internal:*'], allowHttp: true }
  expect(webPushEndpointProblem('http://127.0.0.1:8080/p', config)).toBeNull()
  expect(webPushEndpointProblem('http://127.0.0.1:8081/p', config)).toMatch(/not one of/)
  expect(webPushEndpointProblem('http://127.0.0.1/p', config)).toMatch(/not one of/)
  expect(webPushEndpointProblem('https://push.internal:9443/p', config)).toBeNull()
  expect(webPushEndpointProblem('https://push.internal/p', config)).toBeNull()
  expect(webPushEndpointProblem('ftp://push.internal/p', config)).toMatch(/http/)
})
