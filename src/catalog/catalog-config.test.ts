import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.js';

describe('catalog configuration', () => {
  it('has polite defaults and reads every catalog variable', () => {
    expect(loadConfig({})).toMatchObject({
      catalogRequestsPerSecond: 2,
      catalogTimeoutMs: 60_000,
      catalogMaxRetries: 5,
      catalogRemovedPriorityBoost: 2,
      catalogHeadConcurrency: 8,
      datagovApiUrl: 'https://catalog.data.gov',
      datagovApiKey: undefined,
      catalogSyncIntervalMs: undefined,
      catalogSyncSources: undefined,
    });
    expect(
      loadConfig({
        CATALOG_REQUESTS_PER_SECOND: '0.5',
        CATALOG_TIMEOUT_SECONDS: '2.5',
        CATALOG_MAX_RETRIES: '0',
        CATALOG_REMOVED_PRIORITY_BOOST: '0',
        CATALOG_HEAD_CONCURRENCY: '64',
        DATAGOV_API_URL: 'http://127.0.0.1:8099/',
        DATAGOV_API_KEY: 'abc',
      }),
    ).toMatchObject({
      catalogRequestsPerSecond: 0.5,
      catalogTimeoutMs: 2500,
      catalogMaxRetries: 0,
      catalogRemovedPriorityBoost: 0,
      catalogHeadConcurrency: 64,
      datagovApiUrl: 'http://127.0.0.1:8099',
      datagovApiKey: 'abc',
    });
  });

  it('reads the re-sync interval as a duration and the sources as a JSON list of imports', () => {
    const sources = [
      { source: 'ckan', url: 'https://demo.ckan.org', org: 'cryos' },
      { source: 'datagov', q: 'climate', per_page: 500 },
    ];
    expect(loadConfig({ CATALOG_SYNC_INTERVAL: '6h', CATALOG_SYNC_SOURCES: JSON.stringify(sources) })).toMatchObject({
      catalogSyncIntervalMs: 6 * 3_600_000,
      catalogSyncSources: sources,
    });
    expect(loadConfig({ CATALOG_SYNC_INTERVAL: '90m' }).catalogSyncIntervalMs).toBe(90 * 60_000);
    expect(loadConfig({ CATALOG_SYNC_INTERVAL: '1.5d' }).catalogSyncIntervalMs).toBe(36 * 3_600_000);
  });

  it('names what is wrong in a re-sync setting', () => {
    const problems = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (error) {
        return (error as ConfigError).problems.join('\n');
      }
      return '';
    };
    expect(problems({ CATALOG_SYNC_INTERVAL: 'daily' })).toMatch(/CATALOG_SYNC_INTERVAL must be a duration such as 30m, 6h or 1d, got "daily"/);
    expect(problems({ CATALOG_SYNC_INTERVAL: '10s' })).toMatch(/CATALOG_SYNC_INTERVAL must be between 1 minutes and 366 days/);
    expect(problems({ CATALOG_SYNC_SOURCES: '[{source:ckan}]' })).toMatch(/CATALOG_SYNC_SOURCES must be a JSON list of imports/);
    expect(problems({ CATALOG_SYNC_SOURCES: '[]' })).toMatch(/CATALOG_SYNC_SOURCES has invalid imports: must NOT have fewer than 1 items/);
    expect(problems({ CATALOG_SYNC_SOURCES: '[{"source":"ckan","url":"ftp://x.org"},{"source":"dcat","url":"https://x.gov/data.json","orgg":"a"}]' })).toMatch(
      /CATALOG_SYNC_SOURCES has invalid imports: \/0\/url must match pattern .*; \/1\/orgg is not allowed/,
    );
    expect(problems({ CATALOG_SYNC_SOURCES: '[{"source":"ckan","url":"https://x.org"},{"source":"ckan"}]' })).toMatch(
      /CATALOG_SYNC_SOURCES has invalid imports: \/1: a ckan import needs a url/,
    );
  });

  it('lists every invalid catalog variable', () => {
    const invalid = {
      CATALOG_REQUESTS_PER_SECOND: '0',
      CATALOG_TIMEOUT_SECONDS: 'soon',
      CATALOG_MAX_RETRIES: '50',
      CATALOG_REMOVED_PRIORITY_BOOST: '10',
      CATALOG_HEAD_CONCURRENCY: '0',
      DATAGOV_API_URL: 'ftp://catalog.data.gov',
    };
    let caught: unknown;
    try {
      loadConfig(invalid);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toHaveLength(Object.keys(invalid).length);
  });
});
