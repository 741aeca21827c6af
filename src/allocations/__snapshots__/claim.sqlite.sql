-- allocate;

begin;

update "nodes" set "free_bytes" = ?, "free_reported_at" = ? where "id" = ? returning "free_bytes", "free_reported_at", "bandwidth_bps", "strikes", "draining", "tags";

select coalesce(sum(reserved_bytes), 0) as "reserved" from "allocations" where "node_id" = ? and "state" = ?;

select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= ? and "priority" <= ? and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and "allocations"."state" in ('active', 'completed')) and size_bytes is not null and "size_bytes" <= ? order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit ?;

select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= ? and "priority" <= ? and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and "allocations"."state" in ('active', 'completed')) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit ?;

insert into "allocations" ("asset_id", "node_id", "state", "reserved_bytes", "created_at", "expires_at", "verified") values (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?) returning "id", "asset_id";

update "assets" set "holders" = "holders" + ? where "id" in (?, ?);

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?);

commit;

-- release;

begin;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ? where "asset_id" = ? and "node_id" = ? and "state" = ? returning "id";

update "assets" set "holders" = "holders" - ? where "id" = ?;

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?);

commit;

-- complete;

begin;

select "sha256", "size_bytes", "replicas_target", "copies", "state" from "assets" where "id" = ?;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ?, "sha256" = ?, "bytes" = ?, "uri" = ?, "verified" = ? where "asset_id" = ? and "node_id" = ? and "state" = ? returning "id";

update "assets" set "copies" = "copies" + ?, "state" = case when "copies" + ? >= "replicas_target" then 'rescued' else "state" end, "size_bytes" = coalesce("size_bytes", ?) where "id" = ? returning "state", "copies", "replicas_target";

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?);

commit;

-- expire;

begin;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ? where "id" in (select "id" from "allocations" where "state" = ? and "expires_at" <= ? order by "expires_at" limit ?) and "state" = ? returning "id", "asset_id", "node_id", "expires_at";

commit;
