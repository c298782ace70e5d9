/// <reference types="vitest" />
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));

// The page is served by Tauri from ui/dist; nothing is loaded from a network. `npm run tauri dev`
// serves it from here instead (devUrl in tauri.conf.json), reloading as ui/src changes.
export default defineConfig({
  root: here,
  base: "./",
  clearScreen: false,
  server: { host: "localhost", port: 5173, strictPort: true },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "safari15",
    sourcemap: false,
    modulePreload: { polyfill: false },
  },
  test: {
    root: here,
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
