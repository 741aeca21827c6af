import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentSettings, loadAgentConfig } from './agent.config.js';

describe('agent configuration', () => {
  it('reads the environment, with flags winning', () => {
    const config = loadAgentConfig(
      { concurrency: '5' },
      { API_ENDPOINT: 'http://cp:8000', AGENT_CONCURRENCY: '2', NODE_TAGS: 'region=eu,site=lab', MY_HOST_PORT: '2222', AGENT_BANDWIDTH_LIMIT_MB_S: '1.5' },
    );
    expect(config).toMatchObject({
      apiEndpoint: 'http://cp:8000',
      concurrency: 5,
      tags: { region: 'eu', site: 'lab' },
      sshPort: 2222,
      bandwidthLimit: 1.5 * 1024 * 1024,
      pollSeconds: 30,
      retries: 3,
    });
  });

  it('lists every problem at once', () => {
    expect(() => loadAgentConfig({}, { AGENT_CONCURRENCY: '0', NODE_TAGS: 'nonsense', MY_HOST_PORT: '99999', NODE_NAME: 'bad name!' })).toThrow(
      /API_ENDPOINT[\s\S]*NODE_TAGS[\s\S]*NODE_NAME[\s\S]*MY_HOST_PORT[\s\S]*AGENT_CONCURRENCY/,
    );
  });

  it('scrubs at 8 MiB/s every 24 hours unless told otherwise; 0 turns the scrub off', () => {
    const endpoint = { API_ENDPOINT: 'http://cp:8000' };
    expect(loadAgentConfig({}, endpoint)).toMatchObject({ scrubBytesPerSecond: 8 * 1024 * 1024, scrubIntervalMs: 24 * 3_600_000 });
    expect(loadAgentConfig({ scrubRate: '0' }, { ...endpoint, AGENT_SCRUB_INTERVAL_HOURS: '0.5' })).toMatchObject({
      scrubBytesPerSecond: 0,
      scrubIntervalMs: 1_800_000,
    });
    expect(() => loadAgentConfig({}, { ...endpoint, AGENT_SCRUB_MB_S: '-1', AGENT_SCRUB_INTERVAL_HOURS: '0' })).toThrow(
      /AGENT_SCRUB_MB_S[\s\S]*AGENT_SCRUB_INTERVAL_HOURS/,
    );
  });

  it('keeps copies in DATA_DIRECTORY, and still reads the former DATA_DIR and --data-dir after the new names', () => {
    const endpoint = { API_ENDPOINT: 'http://cp:8000' };
    expect(loadAgentConfig({}, endpoint).dataDirectory).toBe(path.resolve('rescue-data'));
    expect(loadAgentConfig({}, { ...endpoint, DATA_DIR: '/srv/old' }).dataDirectory).toBe('/srv/old');
    expect(loadAgentConfig({}, { ...endpoint, DATA_DIR: '/srv/old', DATA_DIRECTORY: '/srv/new' }).dataDirectory).toBe('/srv/new');
    expect(loadAgentConfig({ dataDir: '/srv/flag' }, { ...endpoint, DATA_DIRECTORY: '/srv/new' }).dataDirectory).toBe('/srv/flag');
    expect(loadAgentConfig({ dataDir: '/srv/old-flag', dataDirectory: '/srv/flag' }, endpoint).dataDirectory).toBe('/srv/flag');
  });

  it('is documented: the README names every variable', () => {
    const readme = fs.readFileSync(path.resolve(import.meta.dirname, '../../README.md'), 'utf8');
    for (const setting of agentSettings) expect(readme, setting.env).toContain(`\`${setting.env}\``);
  });

  it('reads the private-network allowance and the contact, with clear problems', () => {
    expect(loadAgentConfig({}, { API_ENDPOINT: 'http://cp:8000' })).toMatchObject({ allowPrivate: false, contact: 'http://cp:8000', nodeName: undefined });
    expect(
      loadAgentConfig({}, { API_ENDPOINT: 'http://cp:8000', AGENT_ALLOW_PRIVATE_NETWORKS: 'true', AGENT_CONTACT: 'mailto:rescue@example.org' }),
    ).toMatchObject({
      allowPrivate: true,
      contact: 'mailto:rescue@example.org',
    });
    expect(loadAgentConfig({}, { API_ENDPOINT: 'http://cp:8000', AGENT_ALLOW_PRIVATE_NETWORKS: '10.1.0.0/16' }).allowPrivate).toEqual(['10.1.0.0/16']);
    expect(() => loadAgentConfig({}, { API_ENDPOINT: 'http://cp:8000', AGENT_ALLOW_PRIVATE_NETWORKS: 'lan' })).toThrow(/AGENT_ALLOW_PRIVATE_NETWORKS/);
  });
});
