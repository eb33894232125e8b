// What the property tests (fast-check) share: random addresses with an oracle independent of the plugin's
// parser, and the check that an input is refused with the documented CNI error and nothing else.
import fc from "fast-check";
import { CniError } from "../../src/core/errors.js";

export const RUNS = { numRuns: 300 };

/** The documented error and nothing else. */
export function rejects(f: () => unknown, code: number): boolean {
  try {
    f();
  } catch (err) {
    if (err instanceof CniError && err.code === code) return true;
    throw err;
  }
  return false;
}

/** RFC 5952 text of an IPv6 address, by the WHATWG URL host serializer (same rules). */
export const canonical6 = (text: string): string => new URL(`http://[${text}]/`).hostname.slice(1, -1);

export const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."));
const groups = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).filter(
  // not IPv4-mapped (::ffff:0:0/96) nor IPv4-compatible-looking (::/96): those have their own tests
  (g) => !(g.slice(0, 5).every((x) => x === 0) && (g[5] === 0xffff || g[5] === 0)),
);
/** An IPv6 address written in some valid form (full, zero-padded, upper case or compressed) with its canonical text. */
export const v6 = fc.tuple(groups, fc.constantFrom("full", "padded", "upper", "canonical")).map(([g, form]) => {
  const full = g.map((x) => x.toString(16)).join(":");
  const text =
    form === "full"
      ? full
      : form === "padded"
        ? g.map((x) => x.toString(16).padStart(4, "0")).join(":")
        : form === "upper"
          ? full.toUpperCase()
          : canonical6(full);
  return { text, canonical: canonical6(full) };
});
export const anyIp = fc.oneof(
  v4.map((t) => ({ text: t, canonical: t })),
  v6,
);
