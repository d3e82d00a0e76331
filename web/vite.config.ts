// The console is static files the gateway serves (deploy/Caddyfile); `npm run dev` proxies the
// API to a local stack's gateway (MEDIAI_GATEWAY_URL, default http://127.0.0.1:8080).
import { defineConfig } from 'vite';

export default defineConfig({
  build: { outDir: 'dist', sourcemap: true, chunkSizeWarningLimit: 1200 },
  server: { proxy: { '/v1': process.env.MEDIAI_GATEWAY_URL ?? 'http://127.0.0.1:8080' } },
});
