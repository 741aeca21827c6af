-- allocate;

begin immediate;

update "nodes" set "free_bytes" = ?, "free_reported_at" = ? where "id" = ? returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

select "node_id", count(*) as "active" from "allocations" where "node_id" in (?) and "state" = ? group by "node_id";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= ? and "priority" <= ? and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > ? union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= ?)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and "allocations"."state" in ('active', 'completed')) and ("source_errors" = ? or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and end_reason like 'source_gone:%')) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."operator_id" = ? and operator_id is not null and state in ('active', 'completed')) and ("retry_failures" = ? or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = ? and "retry_cooldowns"."retry_at" > ?)) and size_bytes is not null and "size_bytes" <= ? order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit ?), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= ? and "priority" <= ? and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > ? union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= ?)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and "allocations"."state" in ('active', 'completed')) and ("source_errors" = ? or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = ? and end_reason like 'source_gone:%')) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."operator_id" = ? and operator_id is not null and state in ('active', 'completed')) and ("retry_failures" = ? or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = ? and "retry_cooldowns"."retry_at" > ?)) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit ?) select * from "known" union all select * from "unknown";

insert into "allocations" ("asset_id", "node_id", "state", "reserved_bytes", "created_at", "expires_at", "verified", "source_host", "operator_id") values (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?) returning "id", "asset_id", "node_id";

update "assets" set "holders" = "holders" + ? where "id" in (?, ?);

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?);

commit;

-- release;

begin immediate;

select "size_bytes", "sha256", "source_host" from "assets" where "id" = ?;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ? where "asset_id" = ? and "node_id" = ? and "state" = ? returning "id", "asset_id", "node_id", "expires_at";

update "assets" set "holders" = "holders" + ? where "id" in (?);

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?);

select "node_id", "asset_id", "failures" from "retry_cooldowns" where "asset_id" in (?) and "node_id" in (?);

insert into "retry_cooldowns" ("node_id", "asset_id", "failures", "retry_at", "reason", "updated_at") values (?, ?, ?, ?, ?, ?) on conflict ("node_id", "asset_id") do update set "failures" = "excluded"."failures", "retry_at" = "excluded"."retry_at", "reason" = "excluded"."reason", "updated_at" = "excluded"."updated_at";

update "assets" set "retry_failures" = "retry_failures" + ? where "id" in (?);

commit;

-- complete;

begin immediate;

update "assets" set "holders" = "holders" where "id" = ? returning "sha256", "merkle_root", "size_bytes", "replicas_target", "copies", "state", "source_host";

select "vetted_at" from "nodes" where "id" = ?;

select min("created_at") as "first" from "allocations" where "node_id" = ? and "asset_id" = ?;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ?, "sha256" = ?, "bytes" = ?, "uri" = ?, "merkle_root" = ?, "verified" = ?, "proof" = ?, "proven_at" = ? where "asset_id" = ? and "node_id" = ? and "state" = ? returning "id", "asset_id", "node_id", "expires_at";

select "id", "node_id", "operator_id", "sha256" from "allocations" where "asset_id" = ? and "state" = ? and "proof" in (?, ?);

update "allocations" set "verified" = ? where "asset_id" = ? and "state" = ? and "proof" in (?, ?) and "sha256" = ?;

update "assets" set "copies" = (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1), "holders" = (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) + (select count(*) from allocations where allocations.asset_id = assets.id and (allocations.state = 'active' or (allocations.state = 'completed' and allocations.verified = 0 and allocations.proof = 'pending'))), "state" = case when (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) >= replicas_target then 'rescued' when state = 'rescued' then 'pending' else state end, "size_bytes" = coalesce(size_bytes, (select max(bytes) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1)) where "id" = ? returning "state", "copies", "replicas_target";

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?);

update "nodes" set "strikes" = case when strikes + ? < 0 then 0 else strikes + ? end where "id" in (?);

commit;

-- expire;

begin immediate;

update "allocations" set "state" = ?, "ended_at" = ?, "end_reason" = ? where "id" in (select "id" from "allocations" where "state" = 'active' and "expires_at" <= ? order by "expires_at" limit ?) and "state" = ? returning "id", "asset_id", "node_id", "expires_at";

commit;
