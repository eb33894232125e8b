// The CNI_* environment, validated as the spec and libcni's skel do.
import { CniError, Code } from "../core/errors.js";
import { type CniEnv, COMMANDS, type Command, isContainerId, isInterfaceName } from "../core/names.js";

type Env = Readonly<Record<string, string | undefined>>;

function required(env: Env, key: string): string {
  const value = env[key];
  if (value === undefined || value === "")
    throw new CniError(Code.InvalidEnvironment, `required env variable ${key} is missing`);
  return value;
}

function parseArgs(raw: string): Map<string, string> {
  const args = new Map<string, string>();
  if (raw === "") return args;
  for (const pair of raw.split(";")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CniError(Code.InvalidEnvironment, `CNI_ARGS: invalid pair ${JSON.stringify(pair)}`);
    args.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return args;
}

export function readCommand(env: Env): Command {
  const command = required(env, "CNI_COMMAND");
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(Code.InvalidEnvironment, `unknown CNI_COMMAND ${JSON.stringify(command)}`);
  }
  return command as Command;
}

/** The attachment's environment for ADD, CHECK and DEL (DEL needs no netns). */
export function readAttachmentEnv(env: Env, command: Command): CniEnv {
  const containerId = required(env, "CNI_CONTAINERID");
  if (!isContainerId(containerId)) {
    throw new CniError(
      Code.UnknownContainer,
      `CNI_CONTAINERID ${JSON.stringify(containerId)} is not a valid container ID`,
    );
  }
  const ifname = required(env, "CNI_IFNAME");
  if (!isInterfaceName(ifname))
    throw new CniError(Code.InvalidEnvironment, `CNI_IFNAME ${JSON.stringify(ifname)} is not a valid interface name`);
  const netns = command === "DEL" ? (env["CNI_NETNS"] ?? "") : required(env, "CNI_NETNS");
  return { command, containerId, netns, ifname, args: parseArgs(env["CNI_ARGS"] ?? "") };
}
