// The installer: puts the plugin on a node and keeps its conflist entry in place (its flags: cli/install.ts).
import { constants } from "node:fs";
import { access, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isSea } from "node:sea";
import { createPatch, FILE_HEADERS_ONLY } from "diff";
import { PLUGIN_TYPE } from "../core/names.js";
import { installedEntry, pluginEntry, withEntry, withoutEntry } from "./conflist.js";
import { copyExecutableAtomic, findConflist, resolveLayout, writeTextAtomic } from "./files.js";
import { watchDirectory } from "./watch.js";

export interface InstallOptions {
  mode: "install" | "watch" | "uninstall" | "check" | "help";
  dryRun: boolean;
  /** Undefined: the default for this node's layout (files.ts resolveLayout). */
  cniBinDir: string | undefined;
  cniConfDir: string | undefined;
  /** A file name in the conf dir or a path; undefined: the file the runtime uses. */
  conflist: string | undefined;
  /** What to copy; undefined: this executable. */
  binary: string | undefined;
  /** The conflist entry, without `type` and `capabilities`. */
  settings: Record<string, unknown>;
}

export class Installer {
  constructor(
    private readonly options: InstallOptions,
    private readonly root: string,
    private readonly signal: AbortSignal | undefined,
    private readonly stdout: (text: string) => void,
    private readonly stderr: (text: string) => void,
    /** Called after --watch has written the entry back (the keeper scopes the pods started meanwhile). */
    private readonly onEntryWritten: () => void = () => {},
  ) {}

  async run(): Promise<void> {
    const { options } = this;
    const layout = await resolveLayout({ binDir: options.cniBinDir, confDir: options.cniConfDir }, this.root);
    const target = join(layout.binDir, PLUGIN_TYPE);
    const entry = pluginEntry(options.settings);
    const sync = (quiet: boolean): Promise<void> =>
      this.editConflist(
        layout.confDir,
        (text, file) => withEntry(text, entry, file),
        "added the entry after portmap",
        quiet,
      );

    switch (options.mode) {
      case "uninstall":
        // Entry first: a conflist naming a missing binary would fail every pod's network setup.
        await this.editConflist(layout.confDir, withoutEntry, "removed the entry", false);
        if (options.dryRun) this.stdout(`would remove ${target}\n`);
        else {
          await rm(target, { force: true });
          this.stdout(`removed ${target}\n`);
        }
        return;
      case "check": {
        // The exec probe: the binary is in place and the conflist the runtime uses has our entry.
        await access(target, constants.X_OK);
        const file = await findConflist(layout.confDir, options.conflist);
        if (!installedEntry(await readFile(file, "utf8"), file)) throw new Error(`${file} has no ${PLUGIN_TYPE} entry`);
        this.stdout(`${target} and the entry in ${file} are in place\n`);
        return;
      }
      case "watch":
        await this.copyBinary(target);
        this.stdout(
          `watching ${layout.confDir}${layout.detected ? ` (${layout.detected.name} layout: ${layout.detected.why})` : ""}\n`,
        );
        await watchDirectory(
          layout.confDir,
          () => sync(true),
          this.signal ?? terminationSignal(),
          (message) => this.stderr(`${message}\n`),
        );
        this.stdout("stopped\n");
        return;
      default:
        await this.copyBinary(target);
        await sync(false);
    }
  }

  private async copyBinary(target: string): Promise<void> {
    const source = this.options.binary ?? ownBinary(this.stderr);
    if (this.options.dryRun) this.stdout(`would copy ${source} to ${target}\n`);
    else {
      await copyExecutableAtomic(source, target);
      this.stdout(`installed ${target}\n`);
    }
  }

  /** Applies `edit` to the conflist the runtime uses; prints a diff instead under --dry-run. */
  private async editConflist(
    confDir: string,
    edit: (text: string, file: string) => string,
    done: string,
    quiet: boolean,
  ): Promise<void> {
    const file = await findConflist(confDir, this.options.conflist);
    const text = await readFile(file, "utf8");
    const next = edit(text, file);
    if (next === text) {
      if (!quiet) this.stdout(`${file}: nothing to change\n`);
    } else if (this.options.dryRun) {
      // A unified diff naming the file on the `---` and `+++` lines, with three lines of context.
      this.stdout(
        createPatch(file, text, next, undefined, undefined, { context: 3, headerOptions: FILE_HEADERS_ONLY }),
      );
    } else {
      await writeTextAtomic(file, next, text);
      this.stdout(`${file}: ${done}\n`);
      this.onEntryWritten();
    }
  }
}

// A single executable carries its runtime; otherwise we are the bundle that `node` runs.
function ownBinary(stderr: (text: string) => void): string {
  if (isSea()) return process.execPath;
  const script = process.argv[1];
  if (script === undefined) throw new Error("cannot tell which file to install; pass --binary");
  stderr(
    "note: installing the Node.js bundle, which needs node on the container runtime's PATH; nodes without Node.js need portmap-hostip-linux-x64\n",
  );
  return resolve(script);
}

export function terminationSignal(): AbortSignal {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return controller.signal;
}
