// Headless Chromium as every browser test starts it: Debian's binary (or
// $CHROMIUM) with the flags a machine without outside network needs (no
// background requests, no QUIC, no component updates), so no test waits on a
// refused connection of Chromium's own.
//
// playwright-core is passed in rather than imported, because each test folder
// (tests/browser, tests/js, tests/pusher) installs its own from its lock file.

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Starts Chromium through playwright-core's `chromium`, with `extraArgs` after the usual flags. */
export function launchChromium(chromium, extraArgs = []) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...extraArgs] });
}
