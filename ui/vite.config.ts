/// <reference types="vitest" />
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));

// The page is served by Tauri from ui/dist; nothing is loaded from a network.
export default defineConfig({
  root: here,
  base: "./",
  clearScreen: false,
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
