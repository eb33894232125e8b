// Output of the operator commands: an aligned table that fits 80 columns for people, JSON for machines.
import type { StatusRow } from "./status.js";

const WIDTH = 80;
const GAP = "  ";

/** Splits text into pieces of at most `width` characters, at separators when it can. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let rest = text;
  while (rest.length > width) {
    const cut = Math.max(
      rest.lastIndexOf(",", width - 1),
      rest.lastIndexOf("/", width - 1),
      rest.lastIndexOf(" ", width - 1),
    );
    const at = cut > 0 ? cut + 1 : width;
    lines.push(rest.slice(0, at).trimEnd());
    rest = rest.slice(at).trimStart();
  }
  lines.push(rest);
  return lines;
}

export interface TableRow {
  cells: ReadonlyArray<readonly string[]>;
  /** Remarks printed under the row across the whole width. */
  notes?: readonly string[];
}

/**
 * An aligned table of cells (each cell one or more lines). Columns shrink, widest first, until the table fits
 * WIDTH; a cell wider than its column wraps onto further lines rather than losing characters. The `whole`
 * columns (single words a reader scans for, such as a state) never shrink.
 */
export function table(header: readonly string[], rows: readonly TableRow[], whole: readonly number[] = []): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.flatMap((r) => (r.cells[i] ?? []).map((l) => l.length))),
  );
  const total = () => widths.reduce((a, b) => a + b, 0) + GAP.length * (widths.length - 1);
  while (total() > WIDTH) {
    const shrinkable = widths.map((w, i) => (whole.includes(i) ? 0 : w));
    const widest = shrinkable.indexOf(Math.max(...shrinkable));
    if ((widths[widest] as number) <= (header[widest] as string).length) break;
    widths[widest] = (widths[widest] as number) - 1;
  }
  const render = (cells: ReadonlyArray<readonly string[]>): string[] => {
    const columns = cells.map((cell, i) => cell.flatMap((l) => wrap(l, widths[i] as number)));
    const height = Math.max(1, ...columns.map((c) => c.length));
    return Array.from({ length: height }, (_, line) =>
      columns
        .map((c, i) => (c[line] ?? "").padEnd(i === columns.length - 1 ? 0 : (widths[i] as number)))
        .join(GAP)
        .trimEnd(),
    );
  };
  const noteLines = (notes: readonly string[]) =>
    notes.flatMap((n) => wrap(n, WIDTH - 4).map((l, i) => `${i === 0 ? "  - " : "    "}${l}`));
  return `${[
    ...render(header.map((h) => [h])),
    ...rows.flatMap((r) => [...render(r.cells), ...noteLines(r.notes ?? [])]),
  ].join("\n")}\n`;
}

function notes(row: StatusRow): string[] {
  const out: string[] = [];
  if (row.captures.length > 0) out.push(`takes traffic for ${row.captures.join(", ")}`);
  if (row.winner !== null)
    out.push(row.winner === row.pod ? "wins the conflict (first in CNI-HOSTPORT-DNAT)" : `shadowed by ${row.winner}`);
  if (row.state === "orphan") out.push(`no live attachment owns ${row.chain}`);
  if (row.reason !== null) out.push(`answers on no address: ${row.reason}`);
  // A closed mapping's missing rules are no chain to jump to.
  else if (!row.reachable) out.push(`nothing jumps to ${row.chain}: its rules take no traffic`);
  return out;
}

export function statusTable(rows: readonly StatusRow[]): string {
  if (rows.length === 0) return "no hostPort mappings\n";
  return table(
    ["POD", "PORT", "MATCHES", "TO", "STATE", "TABLE"],
    rows.map((r) => ({
      cells: [
        [r.pod],
        [`${r.hostPort}/${r.protocol}`],
        r.destinations.length > 0
          ? r.destinations
          : [r.state === "closed" ? `none (IPv${r.family})` : `* (IPv${r.family})`],
        [r.target],
        [r.state],
        // "legacy", "nft": the nat table of that iptables variant (the column stays narrow).
        [r.backend.replace(/^iptables-/, "")],
      ],
      notes: notes(r),
    })),
    [4, 5],
  );
}

export function statusJson(rows: readonly StatusRow[], warnings: readonly string[]): string {
  return `${JSON.stringify({ mappings: rows, warnings }, null, 2)}\n`;
}
