// Edits the plugins list of a conflist as text, so everything but our entry stays byte-for-byte.
import { isDeepStrictEqual } from "node:util";
import { type Node, parseTree } from "jsonc-parser";
import type { ManagedList } from "../backends/backend.js";
import { PLUGIN_TYPE } from "../core/names.js";

const CAPABILITIES = { portMappings: true, "io.kubernetes.cri.pod-annotations": true } as const;

/** The conflist entry for the chosen settings. */
export function pluginEntry(settings: Record<string, unknown>): Record<string, unknown> {
  return { type: PLUGIN_TYPE, capabilities: { ...CAPABILITIES }, ...settings };
}

/** The text with exactly one `entry`, right after portmap; the same string when it is already so. */
export function withEntry(text: string, entry: Record<string, unknown>, file: string): string {
  const doc = parse(text, file);
  const others = doc.plugins.filter((plugin) => !isOurs(plugin));
  const portmap = others.findIndex((plugin) => isObject(plugin) && plugin["type"] === "portmap");
  if (portmap < 0) {
    throw new Error(
      `${file} has no "portmap" plugin: hostPorts do not work with this network at all, and ${PLUGIN_TYPE} only refines portmap's rules; add portmap first`,
    );
  }
  const ours = doc.plugins.filter(isOurs);
  if (ours.length === 1 && isDeepStrictEqual(ours[0], entry) && isOurs(doc.plugins[portmap + 1])) return text;

  const stripped = withoutEntry(text, file);
  const after = pluginNodes(stripped)[portmap] as Node;
  const result = stripped.slice(0, end(after)) + formatEntry(stripped, after, entry) + stripped.slice(end(after));
  others.splice(portmap + 1, 0, entry);
  assertSame(result, { ...doc.value, plugins: others }, file);
  return result;
}

/** Our entry in the conflist (the first). */
export function installedEntry(text: string, file: string): Record<string, unknown> | undefined {
  return parse(text, file).plugins.find(isOurs) as Record<string, unknown> | undefined;
}

/** The conflist's network and our entry in it, for the keeper's and reconcile's passes; undefined without a name. */
export function managedList(text: string, file: string): ManagedList | undefined {
  const network = parse(text, file).value["name"];
  return typeof network === "string" ? { network, entry: installedEntry(text, file) } : undefined;
}

/** The text without any entry of ours; the same string when there is none. */
export function withoutEntry(text: string, file: string): string {
  const doc = parse(text, file);
  let result = text;
  // Last first, so the indices of the earlier ones stay valid.
  for (let i = doc.plugins.length - 1; i >= 0; i--) {
    if (!isOurs(doc.plugins[i])) continue;
    const nodes = pluginNodes(result);
    const node = nodes[i] as Node;
    // Take the separator with it: the comma and line before it, or (first element) the one after it.
    const previous = nodes[i - 1];
    const next = nodes[i + 1];
    const [from, to] = previous
      ? [end(previous), end(node)]
      : next
        ? [node.offset, next.offset]
        : [node.offset, end(node)];
    result = result.slice(0, from) + result.slice(to);
  }
  if (result !== text)
    assertSame(result, { ...doc.value, plugins: doc.plugins.filter((plugin) => !isOurs(plugin)) }, file);
  return result;
}

interface Doc {
  value: Record<string, unknown>;
  plugins: unknown[];
}

function parse(text: string, file: string): Doc {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(value) || !Array.isArray(value["plugins"])) {
    throw new Error(`${file} is not a conflist (no "plugins" list); chained plugins such as portmap need one`);
  }
  return { value, plugins: value["plugins"] };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isOurs(plugin: unknown): boolean {
  return isObject(plugin) && plugin["type"] === PLUGIN_TYPE;
}

// Our edits only ever change the plugins list: anything else means a bug here, and a broken conflist
// stops every pod on the node from starting, so refuse to write it.
function assertSame(text: string, expected: unknown, file: string): void {
  if (!isDeepStrictEqual(JSON.parse(text), expected)) throw new Error(`editing ${file} went wrong; left it unchanged`);
}

// Matches the style of the list: one line per element when the file is pretty-printed, else compact.
function formatEntry(text: string, after: Node, entry: Record<string, unknown>): string {
  const lineStart = text.lastIndexOf("\n", after.offset - 1) + 1;
  const indent = text.slice(lineStart, after.offset);
  if (!/^[ \t]*$/.test(indent)) return `,${JSON.stringify(entry)}`;
  const unit = /\n([ \t]+)\S/.exec(text)?.[1] ?? "  ";
  return `,\n${indent}${JSON.stringify(entry, null, unit).replaceAll("\n", `\n${indent}`)}`;
}

/**
 * The elements of the top-level "plugins" list of `text` (valid JSON), with where each is. jsonc-parser's own
 * edits (`modify`) are not used: with formatting they rewrite the whole lines around the edit (portmap's own, in
 * a list kept on one line), and without it removing the last element mangles the text before the `]`.
 */
function pluginNodes(text: string): Node[] {
  // Of repeated keys the last, as JSON.parse (and libcni) read them.
  const property = parseTree(text)
    ?.children?.filter((node) => node.children?.[0]?.value === "plugins")
    .at(-1);
  return property?.children?.[1]?.children ?? [];
}

function end(node: Node): number {
  return node.offset + node.length;
}
