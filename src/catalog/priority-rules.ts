/**
 * CATALOG_PRIORITY_RULES: initial priorities from configuration, e.g.
 *   [{"organization":"noaa-gov","priority":9},{"keyword":"climate","boost":2},{"format":"csv","priority":7}]
 * Each rule matches on exactly one of organization, keyword or format (case-insensitive, whole
 * value) and either sets a priority or adds a boost.
 */
export type PriorityRuleMatch = { organization: string } | { keyword: string } | { format: string };
export type PriorityRule = PriorityRuleMatch & ({ priority: number } | { boost: number });

/** What a rule can match on: the resource as the portal described it. */
export interface PrioritySubject {
  organization: string | null;
  keywords: string[];
  format: string | null;
}

const MATCHERS = ['organization', 'keyword', 'format'] as const;
const EFFECTS = ['priority', 'boost'] as const;
const EXAMPLE = '[{"organization":"noaa-gov","priority":9},{"keyword":"climate","boost":2}]';

function parseRule(value: unknown, index: number): PriorityRule {
  const at = `rule ${index + 1}`;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${at} must be an object such as {"format":"csv","priority":7}`);
  const entries = Object.entries(value);
  const unknown = entries.map(([key]) => key).filter((key) => !(MATCHERS as readonly string[]).includes(key) && !(EFFECTS as readonly string[]).includes(key));
  if (unknown.length > 0)
    throw new Error(`${at} has ${unknown.map((key) => `"${key}"`).join(', ')}: a rule takes one of organization, keyword, format and one of priority, boost`);
  const matchers = entries.filter(([key]) => (MATCHERS as readonly string[]).includes(key));
  const effects = entries.filter(([key]) => (EFFECTS as readonly string[]).includes(key));
  if (matchers.length !== 1) throw new Error(`${at} must match on exactly one of organization, keyword, format`);
  if (effects.length !== 1) throw new Error(`${at} must have exactly one of priority (1–10) or boost (-9–9)`);
  const [matcher, pattern] = matchers[0] as [string, unknown];
  const [effect, amount] = effects[0] as [string, unknown];
  if (typeof pattern !== 'string' || pattern.trim() === '') throw new Error(`${at}: ${matcher} must be a non-empty string`);
  const [min, max] = effect === 'priority' ? [1, 10] : [-9, 9];
  if (!Number.isInteger(amount) || (amount as number) < min || (amount as number) > max)
    throw new Error(`${at}: ${effect} must be an integer from ${min} to ${max}`);
  return { [matcher]: pattern.trim(), [effect]: amount } as PriorityRule;
}

/** Parses the variable; throws with what is wrong, for the start-up's list of problems. */
export function parsePriorityRules(raw: string): PriorityRule[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Error(`must be a JSON list of rules such as ${EXAMPLE}`);
  }
  if (!Array.isArray(value)) throw new Error(`must be a JSON list of rules such as ${EXAMPLE}`);
  return value.map(parseRule);
}

const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/** A format matches by name ("CSV") or by a media type's subtype ("text/csv"). */
function formatMatches(format: string | null, pattern: string): boolean {
  if (format === null) return false;
  return same(format.trim(), pattern) || same(format.trim().split('/').at(-1) ?? '', pattern);
}

function matches(rule: PriorityRule, subject: PrioritySubject): boolean {
  if ('organization' in rule) return subject.organization !== null && same(subject.organization, rule.organization);
  if ('keyword' in rule) return subject.keywords.some((keyword) => same(keyword.trim(), rule.keyword));
  return formatMatches(subject.format, rule.format);
}

/**
 * A new asset's priority within 1–10: the first matching `priority` rule (in the list's order)
 * replaces the portal's signal, then every matching `boost` is added.
 */
export function applyPriorityRules(portalPriority: number, subject: PrioritySubject, rules: PriorityRule[]): number {
  const matching = rules.filter((rule) => matches(rule, subject));
  const set = matching.find((rule): rule is PriorityRule & { priority: number } => 'priority' in rule);
  const boost = matching.reduce((sum, rule) => sum + ('boost' in rule ? rule.boost : 0), 0);
  return Math.max(1, Math.min(10, (set?.priority ?? portalPriority) + boost));
}
