# syntax=docker/dockerfile:1
# Dispatcher's control plane: `docker build -t dispatcher .`, then see compose.yaml.
# Both stages use the same base image, so the native SQLite driver built in the first runs in the second.
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
# better-sqlite3 compiles from source when no prebuilt binary fits.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` also builds (the `prepare` script: tsc into dist/); then the dev dependencies go.
RUN --mount=type=cache,target=/root/.npm npm ci && npm prune --omit=dev

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    DATA_DIRECTORY=/data \
    PORT=8000
WORKDIR /app
# Owned by root and read-only to the service user: only /data is writable.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
# The official image's unprivileged user (uid 1000).
USER node
# The SQLite database lives here when DATABASE_URL is unset (one instance only).
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM from `docker stop` reaches node directly (exec form): loops finish, then it exits.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
