package api

import (
	"fmt"
	"html/template"
	"strings"

	qrcode "github.com/yeqown/go-qrcode/v2"
)

// qrSVG draws text as a QR code in inline SVG: no image request, no
// script, crisp at any size. Error correction M suits a screen; the four
// modules of quiet zone are the standard's minimum.
func qrSVG(text string) (template.HTML, error) {
	qr, err := qrcode.NewWith(text, qrcode.WithErrorCorrectionLevel(qrcode.ErrorCorrectionMedium))
	if err != nil {
		return "", fmt.Errorf("encoding QR code: %w", err)
	}
	w := &svgWriter{}
	if err := qr.Save(w); err != nil {
		return "", fmt.Errorf("drawing QR code: %w", err)
	}
	return template.HTML(w.out), nil //nolint:gosec // built from numbers only
}

type svgWriter struct{ out string }

func (w *svgWriter) Write(mat qrcode.Matrix) error {
	const quiet = 4
	bits := mat.Bitmap()
	n := len(bits) + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img" aria-label="QR code">`, n, n)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y, row := range bits {
		for x := 0; x < len(row); {
			if !row[x] {
				x++
				continue
			}
			start := x
			for x < len(row) && row[x] {
				x++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", start+quiet, y+quiet, x-start, x-start)
		}
	}
	b.WriteString(`"/></svg>`)
	w.out = b.String()
	return nil
}

func (w *svgWriter) Close() error { return nil }
