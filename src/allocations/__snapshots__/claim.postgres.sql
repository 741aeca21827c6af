-- allocate;

begin;

update "nodes" set "free_bytes" = $1, "free_reported_at" = $2 where "id" = $3 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

select "node_id", count(*) as "active" from "allocations" where "node_id" in ($1) and "state" = $2 group by "node_id";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $3 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $4)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $6 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $7 and end_reason like 'source_gone:%')) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."operator_id" = $8 and operator_id is not null and state in ('active', 'completed')) and ("retry_failures" = $9 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $10 and "retry_cooldowns"."retry_at" > $11)) and size_bytes is not null and "size_bytes" <= $12 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $13 for update of "assets" skip locked), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $14 and "priority" <= $15 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $16 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $17)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $18 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $19 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $20 and end_reason like 'source_gone:%')) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."operator_id" = $21 and operator_id is not null and state in ('active', 'completed')) and ("retry_failures" = $22 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $23 and "retry_cooldowns"."retry_at" > $24)) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $25 for update of "assets" skip locked) select * from "known" union all select * from "unknown";

insert into "source_hosts" ("host", "paused_until", "pause_reason", "updated_at") values ($1, $2, $3, $4) on conflict ("host") do nothing;

select "host" from "source_hosts" where "host" in ($1) order by "host" for update;

select "source_host", count(*) as "active" from "allocations" where state = 'active' and "source_host" in ($1) group by "source_host";


    with granted as (
      insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified, source_host, operator_id)
      select g.asset_id, g.node_id, 'active', g.reserved_bytes, $1::bigint, g.expires_at, 0, g.source_host, g.operator_id
      from unnest($2::text[], $3::bigint[],
                  $4::bigint[], $5::bigint[],
                  $6::text[], $7::bigint[])
        with ordinality as g(asset_id, node_id, reserved_bytes, expires_at, source_host, operator_id, position)
      order by g.position
      returning id, asset_id, node_id
    ), counted as (
      update assets set holders = holders + c.grants
      from (select asset_id, count(*)::int as grants from granted group by asset_id) as c
      where assets.id = c.asset_id
    ), logged as (
      insert into events (at, actor, kind, subject_type, subject_id, data)
      select $8::bigint, e.actor, $9, 'allocation', granted.id::text, e.data
      from unnest($10::text[], $11::bigint[],
                  $12::text[], $13::text[])
        with ordinality as e(asset_id, node_id, actor, data, position)
      join granted using (asset_id, node_id)
      order by e.position
    )
    select id, asset_id, node_id from granted;

commit;

begin;

update "nodes" set "free_bytes" = $1, "free_reported_at" = $2 where "id" = $3 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

select "node_id", count(*) as "active" from "allocations" where "node_id" in ($1) and "state" = $2 group by "node_id";

select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $3 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $4)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $6 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $7 and end_reason like 'source_gone:%')) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."operator_id" = $8 and operator_id is not null and state in ('active', 'completed')) and ("retry_failures" = $9 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $10 and "retry_cooldowns"."retry_at" > $11)) and size_bytes is not null and "size_bytes" <= $12 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $13;

commit;

-- release;

begin;

select "size_bytes", "sha256", "source_host" from "assets" where "id" = $1;

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3 where "asset_id" = $4 and "node_id" = $5 and "state" = $6 returning "id", "asset_id", "node_id", "expires_at";

update "assets" set "holders" = "holders" + $1 where "id" in ($2);

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values ($1, $2, $3, $4, $5, $6);

select "node_id", "asset_id", "failures" from "retry_cooldowns" where "asset_id" in ($1) and "node_id" in ($2);

insert into "retry_cooldowns" ("node_id", "asset_id", "failures", "retry_at", "reason", "updated_at") values ($1, $2, $3, $4, $5, $6) on conflict ("node_id", "asset_id") do update set "failures" = "excluded"."failures", "retry_at" = "excluded"."retry_at", "reason" = "excluded"."reason", "updated_at" = "excluded"."updated_at";

update "assets" set "retry_failures" = "retry_failures" + $1 where "id" in ($2);

commit;

-- complete;

begin;

update "assets" set "holders" = "holders" where "id" = $1 returning "sha256", "merkle_root", "size_bytes", "replicas_target", "copies", "state", "source_host";

select "vetted_at" from "nodes" where "id" = $1;

select min("created_at") as "first" from "allocations" where "node_id" = $1 and "asset_id" = $2;

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3, "sha256" = $4, "bytes" = $5, "uri" = $6, "merkle_root" = $7, "verified" = $8, "proof" = $9, "proven_at" = $10 where "asset_id" = $11 and "node_id" = $12 and "state" = $13 returning "id", "asset_id", "node_id", "expires_at";

select "id", "node_id", "operator_id", "sha256" from "allocations" where "asset_id" = $1 and "state" = $2 and "proof" in ($3, $4);

update "allocations" set "verified" = $1 where "asset_id" = $2 and "state" = $3 and "proof" in ($4, $5) and "sha256" = $6;

update "assets" set "copies" = (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1), "holders" = (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) + (select count(*) from allocations where allocations.asset_id = assets.id and (allocations.state = 'active' or (allocations.state = 'completed' and allocations.verified = 0 and allocations.proof = 'pending'))), "state" = case when (select count(distinct coalesce(allocations.operator_id, -allocations.node_id)) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) >= replicas_target then 'rescued' when state = 'rescued' then 'pending' else state end, "size_bytes" = coalesce(size_bytes, (select max(bytes) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1)) where "id" = $1 returning "state", "copies", "replicas_target";

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values ($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12);

update "nodes" set "strikes" = case when strikes + $1 < 0 then 0 else strikes + $2 end where "id" in ($3);

commit;

-- expire;

begin;

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3 where "id" in (select "id" from "allocations" where "state" = 'active' and "expires_at" <= $4 order by "expires_at" limit $5) and "state" = $6 returning "id", "asset_id", "node_id", "expires_at";

commit;
