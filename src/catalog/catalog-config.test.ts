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
    });
    expect(loadConfig({
      CATALOG_REQUESTS_PER_SECOND: '0.5',
      CATALOG_TIMEOUT_SECONDS: '2.5',
      CATALOG_MAX_RETRIES: '0',
      CATALOG_REMOVED_PRIORITY_BOOST: '0',
      CATALOG_HEAD_CONCURRENCY: '64',
      DATAGOV_API_URL: 'http://127.0.0.1:8099/',
      DATAGOV_API_KEY: 'abc',
    })).toMatchObject({
      catalogRequestsPerSecond: 0.5,
      catalogTimeoutMs: 2500,
      catalogMaxRetries: 0,
      catalogRemovedPriorityBoost: 0,
      catalogHeadConcurrency: 64,
      datagovApiUrl: 'http://127.0.0.1:8099',
      datagovApiKey: 'abc',
    });
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
