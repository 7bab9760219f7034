# syntax=docker/dockerfile:1
#
# mqim as a container image (README, "Building and deploying"):
#   docker build -t mqim .
#   docker run --rm -p 1883:1883 -p 8080:8080 mqim          # embedded default: everything in memory
# docker-compose.yml runs it with MongoDB, MySQL and Redis.
#
# Two stages. `build` installs every dependency and runs `npm run build` (tsc -p tsconfig.build.json
# into dist/, scripts/build-web.mjs into web/dist/); `runtime` holds only the compiled server, the
# page, config/ and the production dependencies, and runs `node --min-semi-space-size=16 dist/main.js` as the unprivileged
# `node` user. These are the commands test/build.test.ts runs and checks (the build into a
# temporary directory laid out like /app below, then `node --min-semi-space-size=16 dist/main.js`); no Docker engine was
# available where this file was written, so the image itself has not been built there.

ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY config ./config
COPY scripts/build-web.mjs ./scripts/build-web.mjs
COPY src ./src
COPY web ./web
RUN npm run build

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    MQIM_DATA_DIR=/var/lib/mqim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY config ./config
COPY --from=build /app/dist ./dist
COPY --from=build /app/web/dist ./web/dist
# The data directory holds only the admin token; owned by `node` so that a named volume mounted
# there is writable too.
RUN mkdir -p /var/lib/mqim && chown node:node /var/lib/mqim
USER node
# MQTT over TCP, HTTP (chat page, MQTT over WebSocket at /mqtt, /healthz), MQTT over TLS (served
# only when tls.cert and tls.key are configured).
EXPOSE 1883 8080 8883
# GET /healthz answers 200 when every store is up, 503 when one is down (README, "Running a cluster").
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.MQIM_HTTP_PORT || 8080) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop): stop accepting, finish the writes in flight, disconnect clients, exit 0.
STOPSIGNAL SIGTERM
CMD ["node", "--min-semi-space-size=16", "dist/main.js"]
