// The installer: puts the plugin on a node and keeps its conflist entry in place (its flags: cli/install.ts).
import { constants } from "node:fs";
import { access, readFile, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isSea } from "node:sea";
import { createPatch, FILE_HEADERS_ONLY } from "diff";
import type { ManagedList } from "../backends/backend.js";
import { PLUGIN_TYPE } from "../core/names.js";
import { installedEntry, managedList, pluginEntry, withEntry, withoutEntry } from "./conflist.js";
import {
  exists,
  findConflist,
  installExecutable,
  needDirectory,
  removeTemporaries,
  resolveLayout,
  writeNewTextAtomic,
  writeTextAtomic,
} from "./files.js";
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
  /** The conflist entry's keys the command line sets, without `type` and `capabilities`. */
  settings: Record<string, unknown>;
  /** Keys --watch takes out of the entry it keeps (stateDir when the keeper's records are in the default place). */
  clears: readonly string[];
  /** Flag values that were left out, one line each, said on stderr before anything runs. */
  notes: string[];
}

// The entry last installed or kept, beside the plugin in the CNI bin directory (the installer's own directory,
// writable wherever it runs, lasting across reboots; runtimes look plugins up by their exact name): a keeper that
// starts while the conflist has no entry (the network plugin rewrote it meanwhile) puts back the options it had.
export const KEPT_ENTRY = "portmap-hostip-entry.json";

/**
 * install writes the entry its flags give (a key left out is left out); --watch keeps the entry it finds (else the
 * one installed or kept last) and sets only the keys its own flags give: the entry has one owner, the last install.
 */
export type EntryEvent = "start" | "conflist read" | "entry put back";

export class Installer {
  private kept: Record<string, unknown> | undefined;
  private list: ManagedList | undefined;
  private started = false;

  constructor(
    private readonly options: InstallOptions,
    private readonly root: string,
    private readonly signal: AbortSignal | undefined,
    private readonly stdout: (text: string) => void,
    private readonly stderr: (text: string) => void,
    /**
     * What --watch tells the keeper: it first tried to read the conflist ("start": the keeper's first pass knows
     * which network it manages), the conflist names another network since, or it wrote the entry back (the keeper
     * scopes the pods started meanwhile).
     */
    private readonly onEntry: (why: EntryEvent) => void = () => {},
  ) {}

  /** The conflist --watch manages, as last read, with the entry it keeps there: for the keeper's passes. */
  managed(): ManagedList | undefined {
    return this.list;
  }

  async run(): Promise<void> {
    const { options } = this;
    for (const note of options.notes) this.stderr(`note: ${note}\n`);
    const layout = await resolveLayout({ binDir: options.cniBinDir, confDir: options.cniConfDir }, this.root);
    await needDirectory(layout.binDir, "cni-bin-dir", options.cniBinDir !== undefined);
    const target = join(layout.binDir, PLUGIN_TYPE);
    const sync = (quiet: boolean): Promise<void> =>
      this.editConflist(
        layout.confDir,
        (text, file) => withEntry(text, this.entryFor(text, file), file),
        "added the entry after portmap",
        quiet,
      );

    switch (options.mode) {
      case "uninstall": {
        // Entry first: a conflist naming a missing binary would fail every pod's network setup.
        await this.editConflist(layout.confDir, withoutEntry, "removed the entry", false);
        if (!options.dryRun && (await removeTemporaries(target, 0)))
          this.stdout(`removed partial copies beside ${target}\n`);
        for (const file of [target, join(layout.binDir, KEPT_ENTRY)]) {
          if (!(await exists(file))) continue;
          if (options.dryRun) this.stdout(`would remove ${file}\n`);
          else {
            await rm(file, { force: true });
            this.stdout(`removed ${file}\n`);
          }
        }
        return;
      }
      case "check": {
        // The exec probe: the binary is in place and the conflist the runtime uses has our entry.
        await access(target, constants.X_OK).catch((err: Error) => {
          throw new Error(`${target} is not there, or not executable: ${err.message}`, { cause: err });
        });
        const file = await findConflist(layout.confDir, options.conflist);
        if (!installedEntry(await readFile(file, "utf8"), file)) throw new Error(`${file} has no ${PLUGIN_TYPE} entry`);
        this.stdout(`${target} and the entry in ${file} are in place\n`);
        return;
      }
      case "watch":
        await this.copyBinary(target);
        this.kept = await this.readKept(layout.binDir);
        this.stdout(
          `watching ${layout.confDir}${layout.detected ? ` (${layout.detected.name} layout: ${layout.detected.why})` : ""}\n`,
        );
        // The entry must never name a missing binary: one removed meanwhile is copied back first.
        await watchDirectory(
          layout.confDir,
          async () => {
            try {
              if (!(await isFile(target))) await this.copyBinary(target);
              await sync(true);
              await this.saveKept(layout.binDir);
            } finally {
              if (!this.started) {
                this.started = true;
                this.onEntry("start");
              }
            }
          },
          this.signal ?? terminationSignal(),
          (message) => this.stderr(`${message}\n`),
        );
        this.stdout("stopped\n");
        return;
      default:
        await this.copyBinary(target);
        await sync(false);
        if (!options.dryRun) await this.saveKept(layout.binDir);
    }
  }

  /**
   * The entry to have in the conflist: install's is its flags'; --watch's the entry there (else the one it kept
   * last), with the keys its flags set or clear.
   */
  private entryFor(text: string, file: string): Record<string, unknown> {
    const { settings, clears, mode } = this.options;
    if (mode !== "watch") {
      this.kept = pluginEntry(settings);
      return this.kept;
    }
    const { type: _type, capabilities: _capabilities, ...found } = installedEntry(text, file) ?? this.kept ?? {};
    for (const key of clears) delete found[key];
    const entry = pluginEntry({ ...found, ...settings });
    const list = managedList(text, file);
    const learnt = list !== undefined && list.network !== this.list?.network;
    this.kept = entry;
    this.list = list && { ...list, entry };
    if (learnt && this.started) this.onEntry("conflist read");
    return entry;
  }

  private async readKept(binDir: string): Promise<Record<string, unknown> | undefined> {
    const file = join(binDir, KEPT_ENTRY);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    try {
      const entry: unknown = JSON.parse(text);
      if (typeof entry === "object" && entry !== null && (entry as { type?: unknown }).type === PLUGIN_TYPE)
        return entry as Record<string, unknown>;
    } catch {
      // said below
    }
    this.stderr(`${file} is not a ${PLUGIN_TYPE} entry: ignored\n`);
    return undefined;
  }

  private async saveKept(binDir: string): Promise<void> {
    const text = `${JSON.stringify(this.kept)}\n`;
    const file = join(binDir, KEPT_ENTRY);
    if (this.kept === undefined || (await readFile(file, "utf8").catch(() => undefined)) === text) return;
    await writeNewTextAtomic(file, text);
  }

  private async copyBinary(target: string): Promise<void> {
    const source = this.options.binary ?? ownBinary(this.stderr);
    if (this.options.dryRun) this.stdout(`would copy ${source} to ${target}\n`);
    else if (await installExecutable(source, target)) this.stdout(`installed ${target}\n`);
    else this.stdout(`${target} is this executable already\n`);
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
      this.onEntry("entry put back");
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

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() === true;
}

export function terminationSignal(): AbortSignal {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return controller.signal;
}
