/** A portal resource (by source and its own id) and the asset it became; several may share an asset. */
export interface AssetLinksTable {
  source: string;
  resource_id: string;
  asset_id: string;
  dataset: string | null;
  seen_at: number;
}
