import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.js';
import { applyPriorityRules, parsePriorityRules } from './priority-rules.js';

const problemsOf = (raw: string): string[] => {
  try {
    loadConfig({ CATALOG_PRIORITY_RULES: raw, CATALOG_MAX_RETRIES: 'many' });
  } catch (error) {
    return (error as ConfigError).problems;
  }
  return [];
};

describe('CATALOG_PRIORITY_RULES', () => {
  it('reads a JSON list of rules, none by default', () => {
    expect(loadConfig({}).catalogPriorityRules).toEqual([]);
    const raw = '[{"organization":"noaa-gov","priority":9},{"keyword":" climate ","boost":2},{"format":"csv","priority":7},{"format":"pdf","boost":-3}]';
    expect(loadConfig({ CATALOG_PRIORITY_RULES: raw }).catalogPriorityRules).toEqual([
      { organization: 'noaa-gov', priority: 9 },
      { keyword: 'climate', boost: 2 },
      { format: 'csv', priority: 7 },
      { format: 'pdf', boost: -3 },
    ]);
  });

  it('stops start-up with what is wrong, listed with the other problems', () => {
    const cases: [string, RegExp][] = [
      ['noaa:9', /^CATALOG_PRIORITY_RULES must be a JSON list of rules such as \[/],
      ['{"format":"csv","priority":7}', /must be a JSON list of rules/],
      ['[3]', /rule 1 must be an object/],
      ['[{"org":"noaa-gov","priority":9}]', /rule 1 has "org": a rule takes one of organization, keyword, format and one of priority, boost/],
      ['[{"format":"csv","keyword":"x","priority":1}]', /rule 1 must match on exactly one of organization, keyword, format/],
      ['[{"format":"csv"}]', /rule 1 must have exactly one of priority \(1–10\) or boost \(-9–9\)/],
      ['[{"format":"csv","priority":5,"boost":1}]', /rule 1 must have exactly one of priority/],
      ['[{"format":"csv","priority":5},{"format":"csv","priority":11}]', /rule 2: priority must be an integer from 1 to 10/],
      ['[{"keyword":"x","boost":1.5}]', /rule 1: boost must be an integer from -9 to 9/],
      ['[{"keyword":"","boost":1}]', /rule 1: keyword must be a non-empty string/],
      ['[{"organization":7,"priority":1}]', /rule 1: organization must be a non-empty string/],
    ];
    for (const [raw, message] of cases) {
      const problems = problemsOf(raw);
      expect(problems).toHaveLength(2);
      expect(problems.find((problem) => problem.startsWith('CATALOG_PRIORITY_RULES'))).toMatch(message);
    }
  });

  it('replaces the portal priority by the first matching priority rule, then adds every matching boost, within 1–10', () => {
    const rules = parsePriorityRules(
      JSON.stringify([
        { organization: 'NOAA-gov', priority: 9 },
        { format: 'pdf', priority: 2 },
        { keyword: 'climate', boost: 2 },
        { format: 'csv', boost: -1 },
        { keyword: 'ocean', boost: -9 },
      ]),
    );
    const subject = (organization: string | null, keywords: string[], format: string | null) => ({ organization, keywords, format });
    expect(applyPriorityRules(6, subject('other', [], 'ZIP'), rules)).toBe(6); // no rule: the portal's views
    expect(applyPriorityRules(6, subject('noaa-gov', [], 'ZIP'), rules)).toBe(9);
    expect(applyPriorityRules(6, subject('noaa-gov', [], 'PDF'), rules)).toBe(9); // the first priority rule wins
    expect(applyPriorityRules(6, subject('other', [], 'PDF'), rules)).toBe(2);
    expect(applyPriorityRules(6, subject('noaa-gov', ['Climate'], 'PDF'), rules)).toBe(10); // 9 + 2, capped
    expect(applyPriorityRules(5, subject(null, ['climate'], 'text/csv'), rules)).toBe(6); // +2 −1; media subtype matches
    expect(applyPriorityRules(5, subject(null, ['climate change'], 'csv-like'), rules)).toBe(5); // whole values only
    expect(applyPriorityRules(5, subject(null, ['ocean'], null), rules)).toBe(1);
  });
});
