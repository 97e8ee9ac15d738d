// The status page in a real browser: headless Debian chromium driven by
// playwright-core, against a running gateway. Run by tests/integration/ui.rs,
// which starts the gateway and its upstreams and stops one when told to.
//
// Env:
//   GATEWAY      the gateway's base URL (http://127.0.0.1:PORT)
//   UI_TOKEN     an admin's bearer token (the gateway requires one)
//   STOP_ID      the upstream the test stops (its row must turn from ready)
//   EVIL_ID      the upstream whose tool description is hostile markup
//   EVIL_TEXT    that description, exactly
//   REFUSED      a tool name the test had refused before (a recent refusal)
//   PLAYWRIGHT   the folder whose node_modules holds playwright-core
//   CHROMIUM     the browser (default /usr/bin/chromium)
//   SCREENSHOT   where to save a screenshot of the page with data (optional)
//
// Protocol with the test: it prints `STOP <id>` on stdout and waits for a
// line on stdin before checking that the row changes; `PASS` at the end.
// Any failed check throws: the message goes to stderr and the exit code is 1.

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const GATEWAY = env('GATEWAY');
const TOKEN = env('UI_TOKEN');
const STOP_ID = env('STOP_ID');
const EVIL_ID = env('EVIL_ID');
const EVIL_TEXT = env('EVIL_TEXT');
const REFUSED = env('REFUSED');
const require = createRequire(path.join(env('PLAYWRIGHT'), 'package.json'));
const { chromium } = require('playwright-core');

const TOKEN_KEY = 'mcp-gateway.status-token';
const PATIENCE_MS = 30_000;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const profile = mkdtempSync(path.join(tmpdir(), 'mcpgw-ui-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A container's /dev/shm may be too small for the renderer.
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());

  // What must never happen: a dialog, an uncaught error, a CSP violation
  // (the page itself breaking its policy), a second navigation.
  const dialogs = [];
  const errors = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  // Runs through the DevTools protocol, outside the page's CSP.
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });

  const row = (table, key) => page.locator(`#${table} tbody tr[data-key="${key}"]`);
  const stateOf = (key) => row('upstreams', key).locator('td').nth(1);

  // 1. No token: the 401 message, and no data at all.
  const first = await page.goto(`${GATEWAY}/ui`);
  check(first.ok(), `/ui answered ${first.status()}`);
  await page.locator('#message').filter({ hasText: '401' }).waitFor({ timeout: PATIENCE_MS });
  check(await page.locator('#data').isHidden(), 'no data is shown without a token');
  check((await page.locator('#upstreams tbody tr').count()) === 0, 'no upstream row without a token');
  const text401 = await page.locator('body').innerText();
  check(!text401.includes(EVIL_ID) && !text401.includes(STOP_ID), 'no upstream is named without a token');

  // 2. With the token: the upstreams, the catalog, the refusal.
  await page.fill('#token', TOKEN);
  await page.click('#use-token');
  await stateOf(STOP_ID).filter({ hasText: /^ready$/ }).waitFor({ timeout: PATIENCE_MS });
  await stateOf(EVIL_ID).filter({ hasText: /^ready$/ }).waitFor({ timeout: PATIENCE_MS });
  check((await page.locator('#message').innerText()) === '', 'no message once data is shown');
  check(
    (await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY)) === TOKEN,
    'the token is kept in sessionStorage'
  );
  check((await page.locator('#token').inputValue()) === '', 'the token field is emptied once used');
  check((await page.locator('#summary').innerText()).includes('2 upstreams (2 ready)'), 'the summary counts upstreams');

  // The hostile description is shown as the text it is, and nothing ran.
  const evil = row('tools', `${EVIL_ID}__work`);
  await evil.waitFor({ timeout: PATIENCE_MS });
  const shown = await evil.locator('td').nth(3).evaluate((td) => td.textContent);
  check(shown === EVIL_TEXT, `the description is shown verbatim: ${JSON.stringify(shown)}`);
  check((await page.locator('#tools script, #tools img, main script, main img').count()) === 0, 'no element was made from it');
  const annotations = await row('tools', `${EVIL_ID}__read`).locator('td').nth(2).innerText();
  check(annotations.includes('read-only'), `annotations are shown: ${annotations}`);

  // The refusal the test caused is in the recent refusals.
  const refusedRow = page.locator('#refusals tbody tr').filter({ hasText: REFUSED });
  await refusedRow.first().waitFor({ timeout: PATIENCE_MS });
  const refusedText = await refusedRow.first().innerText();
  check(refusedText.includes('access') && refusedText.includes('key:bob'), `the refusal says why and who: ${refusedText}`);

  // Let an onerror or a script have its chance, then look.
  await page.waitForTimeout(1500);
  check((await page.evaluate(() => window.__pwned)) === undefined, 'window.__pwned stays undefined');
  check(dialogs.length === 0, `no dialog opened: ${dialogs}`);

  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }

  // 3. An upstream stops: its row changes in place, without a reload.
  await page.evaluate(() => {
    window.__marker = 'still the first load';
  });
  const rowsBefore = await page.locator('#upstreams tbody tr').elementHandles();
  console.log(`STOP ${STOP_ID}`);
  await nextLine();
  await stateOf(STOP_ID).filter({ hasText: /^(down|starting)/ }).waitFor({ timeout: PATIENCE_MS });
  check((await page.evaluate(() => window.__marker)) === 'still the first load', 'the page was not reloaded');
  check(
    (await page.evaluate(() => performance.getEntriesByType('navigation').length)) === 1,
    'one navigation only'
  );
  const rowsAfter = await page.locator('#upstreams tbody tr').elementHandles();
  let same = rowsBefore.length === rowsAfter.length;
  for (let i = 0; same && i < rowsBefore.length; i++) {
    same = await page.evaluate(([a, b]) => a === b, [rowsBefore[i], rowsAfter[i]]);
  }
  check(same, 'the rows are the same elements, updated in place');
  check(await stateOf(EVIL_ID).filter({ hasText: /^ready$/ }).isVisible(), 'the other upstream is still ready');

  // 4. Forget: the token is gone, and with it the data.
  await page.click('#forget');
  await page.locator('#message').filter({ hasText: '401' }).waitFor({ timeout: PATIENCE_MS });
  check((await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY)) === null, 'forget clears sessionStorage');
  check(await page.locator('#data').isHidden(), 'no data once the token is forgotten');
  check((await page.locator('#upstreams tbody tr').count()) === 0, 'no upstream row once the token is forgotten');

  check(errors.length === 0, `no uncaught error in the page: ${errors}`);
  const violations = await page.evaluate(() => window.__violations);
  check(violations.length === 0, `the page keeps its own CSP: ${violations}`);
  console.log('PASS');
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  process.exitCode = 1;
} finally {
  lines.close();
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
