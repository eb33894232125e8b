// CNI error codes (spec section "Error") and this plugin's own codes (100+, documented in the README).
export const Code = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  /** A host IP is not an address this pod may bind. */
  HostIpNotAllowed: 100,
  /** The pod's host-IP annotation does not parse. */
  InvalidAnnotation: 101,
  /** A mapping to scope has no portmap rules: portmap is missing or runs after us. */
  PortmapRulesMissing: 102,
  /** CHECK: the rules differ from what the policy resolves to now. */
  RulesNotScoped: 103,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = "",
    options?: ErrorOptions,
  ) {
    super(msg, options);
  }
}

/** A write named a rule that is gone: a concurrent DEL (or ADD) of the pod changed its rules. Read again, retry. */
export class RulesChanged extends CniError {}
