import { describe, expect, it } from 'vitest';
import { describeSelection, loadFetchConfig } from './fetch.config.js';

const env = { API_ENDPOINT: 'https://dispatcher.example.org', DISPATCHER_TOKEN: 'from-env' };

describe('loadFetchConfig', () => {
  it('takes asset ids, flags winning over the environment, and no token when none is set', () => {
    expect(loadFetchConfig(['a', 'b'], { out: 'dir', token: 'from-flag' }, env)).toEqual({
      apiEndpoint: 'https://dispatcher.example.org',
      token: 'from-flag',
      mode: { kind: 'assets', ids: ['a', 'b'], out: 'dir' },
    });
    expect(loadFetchConfig(['a'], {}, { API_ENDPOINT: env.API_ENDPOINT, DISPATCHER_TOKEN: '' }).token).toBeUndefined();
  });

  it('takes a selection with --bag', () => {
    const config = loadFetchConfig([], { organization: 'NOAA', dataset: 'sst', bag: 'out' }, env);
    expect(config.mode).toEqual({ kind: 'bag', dir: 'out', selection: { organization: 'NOAA', dataset: 'sst' } });
    expect(describeSelection({ organization: 'NOAA', dataset: 'sst' })).toBe('organization=NOAA dataset=sst');
    expect(describeSelection({})).toBe('all');
  });

  it('lists every problem at once', () => {
    expect(() => loadFetchConfig([], { all: true, dataset: 'sst', out: 'x', token: 'has space' }, {})).toThrow(
      [
        'Invalid fetch:',
        "  - API_ENDPOINT (--api-endpoint) is required: the control plane's URL",
        '  - DISPATCHER_TOKEN (--token) must be a token from POST /auth/login: printable ASCII without spaces',
        '  - --all exports every asset: leave out --dataset and --organization, or --all',
        '  - --dataset, --organization and --all export a BagIt bag: say where with --bag DIR',
      ].join('\n'),
    );
    expect(() => loadFetchConfig(['a'], { bag: 'b', out: 'o' }, env)).toThrow(/not both[\s\S]*--out is for asset ids/);
    expect(() => loadFetchConfig([], {}, { API_ENDPOINT: 'ftp://x' })).toThrow(/must be an http\(s\) URL[\s\S]*name the assets to fetch/);
  });
});
