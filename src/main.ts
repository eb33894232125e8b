// Entry point. With CNI_COMMAND set we are a CNI plugin; otherwise arguments select an operator subcommand.
import { runCni } from "./cni/run.js";

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  // node:tty is loaded only without CNI_COMMAND: eagerly it pulls in `net`, ~7 ms of every pod start. A plain
  // `require` (the bundle is CommonJS): an `import()` would need an ES module loader in the single executable.
  const tty = () => require("node:tty") as typeof import("node:tty");
  if (process.env["CNI_COMMAND"] === undefined && (args.length > 0 || tty().isatty(0))) {
    // Loaded lazily: the per-pod ADD path never pays for operator code.
    const { runCli } = await import("./cli/main.js");
    return runCli(args.length > 0 ? args : ["--help"]);
  }
  // A CNI call writes everything with fs.writeSync and has nothing left running once it returns: exiting at
  // once spares every pod start the runtime's teardown (~1.5 ms on Node 24).
  process.exit(await runCni());
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `portmap-hostip: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
