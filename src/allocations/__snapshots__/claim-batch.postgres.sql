-- allocate a batch;

begin;

update "nodes" set "free_bytes" = case id when $1 then $2 when $3 then $4 when $5 then $6 else free_bytes end, "free_reported_at" = case when id in ($7, $8, $9) then $10 else free_reported_at end where "id" in (select "id" from "nodes" where "id" in ($11, $12, $13, $14) order by "id" for update) returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $3 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $4)) and size_bytes is not null and "size_bytes" <= $5 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $6 for update of "assets" skip locked), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $7 and "priority" <= $8 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $9 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $10)) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $11 for update of "assets" skip locked) select * from "known" union all select * from "unknown";

select "allocations"."asset_id", "allocations"."node_id", "allocations"."operator_id", "allocations"."state", "allocations"."end_reason", "nodes"."tags" from "allocations" inner join "nodes" on "nodes"."id" = "allocations"."node_id" where "allocations"."asset_id" in ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) and ("allocations"."state" in ('active', 'completed') or end_reason like 'source_gone:%');

select "asset_id", "node_id" from "retry_cooldowns" where "asset_id" in ($1) and "node_id" in ($2, $3, $4) and "retry_at" > $5;

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

update "nodes" set "free_bytes" = "free_bytes" where "id" = $1 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $3 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $4)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $6 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $7 and end_reason like 'source_gone:%')) and ("retry_failures" = $8 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $9 and "retry_cooldowns"."retry_at" > $10)) and size_bytes is not null and "size_bytes" <= $11 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $12 for update of "assets" skip locked), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $13 and "priority" <= $14 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $15 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $16)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $17 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $18 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $19 and end_reason like 'source_gone:%')) and ("retry_failures" = $20 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $21 and "retry_cooldowns"."retry_at" > $22)) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $23 for update of "assets" skip locked) select * from "known" union all select * from "unknown";

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

update "nodes" set "free_bytes" = "free_bytes" where "id" = $1 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until", "audits_passed", "audits_failed", "operator_id", "vetted_at";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $3 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $4)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $6 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $7 and end_reason like 'source_gone:%')) and ("retry_failures" = $8 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $9 and "retry_cooldowns"."retry_at" > $10)) and size_bytes is not null and "size_bytes" <= $11 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $12 for update of "assets" skip locked), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors", "retry_failures", "source_host", (select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host) as "host_active" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $13 and "priority" <= $14 and ("source_host" is null or "source_host" not in (select "host" from "source_hosts" where "paused_until" > $15 union all select full_hosts.source_host as "host" from "allocations" as "full_hosts" where full_hosts.state = 'active' and "full_hosts"."source_host" is not null group by "full_hosts"."source_host" having count(*) >= $16)) and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $17 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $18 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $19 and end_reason like 'source_gone:%')) and ("retry_failures" = $20 or not exists (select 1 as "one" from "retry_cooldowns" where "retry_cooldowns"."asset_id" = "assets"."id" and "retry_cooldowns"."node_id" = $21 and "retry_cooldowns"."retry_at" > $22)) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $23 for update of "assets" skip locked) select * from "known" union all select * from "unknown";

select "allocations"."asset_id", "allocations"."node_id", "allocations"."operator_id", "allocations"."state", "allocations"."end_reason", "nodes"."tags" from "allocations" inner join "nodes" on "nodes"."id" = "allocations"."node_id" where "allocations"."asset_id" in ($1, $2, $3, $4) and ("allocations"."state" in ('active', 'completed') or end_reason like 'source_gone:%');

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
