// Reading a command's --help text: which flags it explains, under which heading.

/**
 * The flags each option line of `text` starts with ("  --flag …" or "  -h, --flag …"), by the heading above it (the
 * first line of an unindented paragraph).
 */
export function optionLines(text: string): Map<string, string[]> {
  const sections = new Map<string, string[]>();
  let heading = "";
  let previous = "";
  for (const line of text.split("\n")) {
    if (/^\S/.test(line) && previous === "") heading = line;
    previous = line;
    const flag = /^ {2}(?:-\w, )?--([\w-]+)/.exec(line)?.[1];
    if (flag !== undefined) sections.set(heading, [...(sections.get(heading) ?? []), flag]);
  }
  return sections;
}
