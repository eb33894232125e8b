// What the docs tell a user to type, read from the Markdown itself: the commands of a section's `sh` blocks, and a
// systemd unit's settings. The docs test runs them as written.

/** The text under `heading` (`## …`, `### …`), up to the next heading: its subsections are sections of their own. */
export function section(markdown: string, heading: string): string {
  const lines = markdown.split("\n");
  const isHeading = (l: string) => /^#{1,6} /.test(l);
  const at = lines.findIndex((l) => isHeading(l) && l.replace(/^#+ /, "") === heading);
  if (at < 0) throw new Error(`no section "${heading}"`);
  const end = lines.findIndex((l, i) => i > at && isHeading(l));
  return lines.slice(at + 1, end < 0 ? undefined : end).join("\n");
}

/**
 * The command lines of the section's ```sh blocks, in order: comments (` # …` after the command) dropped,
 * continued lines (`\` at the end) joined.
 */
export function commands(text: string): string[] {
  const out: string[] = [];
  for (const block of text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    const joined = (block[1] as string).replace(/\\\n\s*/g, "");
    for (const line of joined.split("\n")) {
      const command = line.replace(/\s+#\s.*$/, "").trim();
      if (command !== "" && !command.startsWith("#")) out.push(command);
    }
  }
  return out;
}

/** A systemd unit file: per section, its keys' values (in order, a key may repeat). */
export function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1] as string, current);
      continue;
    }
    const setting = /^(\w+)=(.*)$/.exec(line);
    if (!setting || !current) throw new Error(`not a unit file line: ${raw}`);
    const [, key = "", value = ""] = setting;
    current.set(key, [...(current.get(key) ?? []), value]);
  }
  return sections;
}
