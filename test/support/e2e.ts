// Vitest glue for e2e files (kept out of harness.ts, which the demo bundles without vitest).
import { afterAll, beforeAll, describe } from "vitest";
import { createHarness, type Harness, IS_ROOT, ROOT_SKIP_MESSAGE } from "./harness.js";

if (!IS_ROOT) console.warn(ROOT_SKIP_MESSAGE);

/** Both iptables backends, for describeAsRoot.each(): the plugins use the one PATH gives them. */
export const IPTABLES_VARIANTS = [
  { variant: "iptables-nft", legacy: false },
  { variant: "iptables-legacy", legacy: true },
] as const;

/** describe() that runs only as root (network namespaces, iptables); otherwise skipped with a warning. */
export const describeAsRoot = describe.skipIf(!IS_ROOT);

/**
 * A harness (fresh node/client namespaces) for the enclosing describe block: created in beforeAll, destroyed
 * in afterAll even when tests fail. The returned object forwards to it once it exists.
 */
export function useHarness(opts?: Parameters<typeof createHarness>[0]): Harness {
  let current: Harness | undefined;
  beforeAll(async () => {
    current = await createHarness(opts);
  });
  afterAll(async () => {
    await current?.destroy();
    current = undefined;
  });
  return new Proxy({} as Harness, {
    get(_target, key) {
      if (current === undefined)
        throw new Error("the harness is only available inside its describe block's hooks and tests");
      return Reflect.get(current, key);
    },
  });
}

/** Polls `probe` until it returns true, for at most `ms`: the deadline is a requirement (15 s), not a timing. */
export async function eventually(what: string, probe: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
