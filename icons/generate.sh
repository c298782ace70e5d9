#!/usr/bin/env bash
# Draws Switchboard's icons with ImageMagick: the app icon and one tray icon per state. The tray
# icons differ in shape as well as colour (dot, arc, "!" in a circle, "!" in a triangle, two bars)
# so they are told apart at 16 px and by people who do not see the colours. All are RGBA PNGs, as
# Tauri requires. Run it again after changing a drawing; the PNGs are committed.
set -euo pipefail
cd "$(dirname "$0")"
command -v convert >/dev/null || { echo "icons: ImageMagick (convert) is needed" >&2; exit 1; }

big=256
draw() { # draw <out> <size> <ImageMagick drawing arguments...>
  local out=$1 size=$2; shift 2
  convert -size ${big}x${big} xc:none "$@" -filter Lanczos -resize "${size}x${size}" "PNG32:$out"
}

# Tray states, drawn large and scaled down (the tray shows 16–24 px).
dark='#1f2937'
tray_state() { # tray_state <name> <drawing...>
  local name=$1; shift
  draw "tray/$name.png" 32 "$@"
}
# idle: a green disc with a white centre dot.
tray_state idle -fill '#16a34a' -stroke "$dark" -strokewidth 8 -draw 'circle 128,128 128,12' \
  -stroke none -fill white -draw 'circle 128,128 128,88'
# working: a blue disc with a white ring broken by a gap (a spinner).
tray_state working -fill '#2563eb' -stroke "$dark" -strokewidth 8 -draw 'circle 128,128 128,12' \
  -fill none -stroke white -strokewidth 30 -draw 'circle 128,128 128,62' \
  -stroke none -fill '#2563eb' -draw 'polygon 128,128 128,26 196,36 226,100'
# needs attention: an amber disc with a dark "!".
tray_state attention -fill '#f59e0b' -stroke "$dark" -strokewidth 8 -draw 'circle 128,128 128,12' \
  -stroke none -fill "$dark" -draw 'roundrectangle 110,52 146,154 14,14' -draw 'circle 128,196 128,174'
# problem: a red triangle with a white "!".
tray_state problem -fill '#dc2626' -stroke "$dark" -strokewidth 8 -draw 'polygon 128,10 250,238 6,238' \
  -stroke none -fill white -draw 'roundrectangle 112,80 144,170 12,12' -draw 'circle 128,206 128,188'
# paused: a grey rounded square with two white bars.
tray_state paused -fill '#6b7280' -stroke "$dark" -strokewidth 8 -draw 'roundrectangle 14,14 242,242 44,44' \
  -stroke none -fill white -draw 'roundrectangle 76,64 112,192 10,10' -draw 'roundrectangle 144,64 180,192 10,10'

# The app icon: a dark rounded square with two rows of jacks joined by patch cords.
app=(-fill '#1e3a5f' -draw 'roundrectangle 8,8 248,248 48,48'
  -fill none -stroke '#7dd3fc' -strokewidth 14 -draw 'line 72,84 184,172' -draw 'line 72,172 184,84'
  -stroke none -fill white -draw 'circle 72,84 72,60' -draw 'circle 184,84 184,60'
  -draw 'circle 72,172 72,148' -draw 'circle 184,172 184,148')
# The largest is drawn at twice the scale rather than enlarged.
convert -size 512x512 xc:none -affine 2,0,0,2,0,0 "${app[@]}" PNG32:icon.png
draw 128x128@2x.png 256 "${app[@]}"
draw 128x128.png 128 "${app[@]}"
draw 32x32.png 32 "${app[@]}"
echo "icons: written to $(pwd)"
