// Operator subcommands (`portmap-hostip <subcommand>`); the CNI path never loads this module.
import { isSea } from "node:sea";
import { commit, version } from "./version.js";

const HELP = `portmap-hostip ${version}: CNI chained plugin that runs after portmap and scopes its hostPort
DNAT rules to the host IPs each mapping should have.

The container runtime runs it as a plugin (with CNI_COMMAND set), from the conflist entry that
follows "portmap". By hand:

  portmap-hostip install [options]   copy this binary into the CNI bin directory and add the
                                     entry after portmap (install --help lists the options)
  portmap-hostip status [--json]     which pod owns which hostPort on which address, and how
  portmap-hostip reconcile           rebuild missing or wrong hostPort rules from the result cache
  portmap-hostip gc [--dry-run]      delete portmap chains of pods that are gone
  portmap-hostip --version
  portmap-hostip --help

Each command's --help lists all its options. install --watch --cache-dir /var/lib/cni is the node's
keeper (deploy/portmap-hostip.service runs it by hand; the DaemonSet's watch container on a cluster).
`;

export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "--version":
    case "version":
      process.stdout.write(
        `portmap-hostip ${version} (commit ${commit}, node ${process.version}${isSea() ? ", single executable" : ""})\n`,
      );
      return 0;
    case "--help":
    case "-h":
    case "help":
      process.stdout.write(HELP);
      return 0;
    case "install": {
      const { runInstall } = await import("./install.js");
      return runInstall(rest);
    }
    case "status":
    case "reconcile":
    case "gc": {
      const { runOps } = await import("./ops.js");
      return runOps(command, rest);
    }
    default:
      process.stderr.write(`portmap-hostip: unknown subcommand ${JSON.stringify(command)}; try --help\n`);
      return 2;
  }
}
