// SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
//
// Drives Debian's chromium (headless, through playwright-core, which downloads no browser)
// through the web buddy list (examples/clients/web/) served by the demo broker, and asserts
// what the page shows while alice goes online, changes her state and goes offline, and while
// bob, logged in on the page, sets his own status. Started by test_web_buddy_list.sh inside a
// private network namespace; every wait is for something on the page or a process, bounded.
//
// Environment: PAGE_URL (http://127.0.0.1:9001/), MQTT_PORT (1883), SCREENSHOT (a .png path),
// CHROMIUM (default /usr/bin/chromium).
'use strict';

const { chromium } = require('playwright-core');
const { spawn, execFileSync } = require('node:child_process');

const pageUrl = process.env.PAGE_URL || 'http://127.0.0.1:9001/';
const mqttPort = process.env.MQTT_PORT || '1883';
const timeout = 20000; // ms, for every wait on the page
let failures = 0;

function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'}: ${what}`);
  if (!ok) failures++;
}

// The text of user NAME's row, once the row matches `available` (true/false) and `pattern`.
async function waitForRow(page, name, available, pattern, what) {
  const row = page.locator(`li[data-user="${name}"][data-available="${available}"]`);
  try {
    await row.filter({ hasText: pattern }).waitFor({ timeout });
    check(true, what);
  } catch (e) {
    const rows = await page.locator('#buddies li').allInnerTexts();
    check(false, `${what} (the page shows: ${JSON.stringify(rows)})`);
  }
  return (await row.count()) ? row.first().innerText() : '';
}

function mqtt(tool, args) {
  return ['-h', '127.0.0.1', '-p', mqttPort, ...args];
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false, // adds --no-sandbox: root in a container has no usable sandbox
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout,
  });
  let alice = null;
  try {
    const page = await browser.newPage({ viewport: { width: 720, height: 300 } });
    page.on('console', (msg) => console.log(`page console: ${msg.text()}`));
    page.on('pageerror', (err) => check(false, `no script error on the page: ${err.message}`));
    await page.goto(pageUrl, { timeout });
    await page.fill('#username', 'bob');
    await page.fill('#password', 'bob-pw');
    await page.click('#login button');
    await page.locator('#status', { hasText: 'Connected as bob.' }).waitFor({ timeout });
    check(true, 'bob logs in over websockets');
    await waitForRow(page, 'bob', true, /bob \(you\).*online since/s, 'bob is shown online (green)');

    // alice comes online with a session of her own (a phone, here a subscriber).
    alice = spawn('mosquitto_sub', mqtt('mosquitto_sub', ['-u', 'alice', '-P', 'alice-pw', '-i', 'alice-phone',
      '-t', 'presence/alice/error']), { stdio: 'ignore' });
    await waitForRow(page, 'alice', true, /online since/, 'alice goes online: green dot, "online since"');

    // alice changes her state.
    execFileSync('mosquitto_pub', mqtt('mosquitto_pub', ['-u', 'alice', '-P', 'alice-pw', '-q', '1',
      '-t', 'presence/alice/state', '-m', '{"status":"in a meeting","battery":87}']));
    await waitForRow(page, 'alice', true, 'status: in a meeting, battery: 87', 'alice\'s new state is shown');

    // bob sets his own status with the page's form.
    await page.fill('#mystatus', 'busy');
    await page.click('#mine button');
    await waitForRow(page, 'bob', true, 'status: busy', 'bob\'s status set from the page is shown');
    // carol looks once and leaves: a grey dot.
    execFileSync('mosquitto_sub', mqtt('mosquitto_sub', ['-u', 'carol', '-P', 'carol-pw', '-t', 'presence/carol',
      '-C', '1', '-W', '10']));
    await waitForRow(page, 'carol', false, /offline since/, 'carol, who came and went, is shown offline (grey)');
    if (process.env.SCREENSHOT) {
      await page.screenshot({ path: process.env.SCREENSHOT });
      console.log(`screenshot: ${process.env.SCREENSHOT}`);
    }

    // alice's last session ends: she goes offline and her state is cleared.
    const exited = new Promise((resolve) => alice.once('exit', resolve));
    alice.kill('SIGINT');
    await exited;
    alice = null;
    const text = await waitForRow(page, 'alice', false, /offline since/, 'alice goes offline: grey dot, "offline since"');
    check(!text.includes('status'), `alice's state is cleared when she goes offline (row: ${JSON.stringify(text)})`);
    if (process.env.SCREENSHOT_OFFLINE) await page.screenshot({ path: process.env.SCREENSHOT_OFFLINE });
  } finally {
    if (alice) alice.kill('SIGKILL');
    await browser.close();
  }
}

main().then(() => {
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}, (err) => {
  console.log(`FAIL: ${err.stack || err}`);
  process.exit(1);
});
