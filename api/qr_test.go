package api

import (
	"image"
	"image/color"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

// The SVG the checkout page shows is a QR code a scanner reads back as the
// payment request: drawn from the path, decoded by an independent decoder.
func TestQRSVGDecodes(t *testing.T) {
	for _, uri := range []string{
		eip681("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 8453, "0x6A05daed91d94C3cf954E89f42A3442D3600Cb2a", nil),
		"ethereum:0x5FbDB2315678afecb367f032d93F642f64180aa3@31337/transfer?address=0x1e1f460B8F381233256e675cc224D764A0514c93&uint256=1000000000000000001",
	} {
		svg, err := qrSVG(uri)
		if err != nil {
			t.Fatal(err)
		}
		img := rasterize(t, string(svg), 4)
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := zxqr.NewQRCodeReader().Decode(bmp, nil)
		if err != nil {
			t.Fatalf("decoding the QR code of %s: %v", uri, err)
		}
		if res.GetText() != uri {
			t.Errorf("QR code reads %q, want %q", res.GetText(), uri)
		}
	}
}

var (
	viewBox = regexp.MustCompile(`viewBox="0 0 (\d+) (\d+)"`)
	run     = regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-(\d+)z`)
)

// rasterize draws the modules of qrSVG's path, scale pixels each.
func rasterize(t *testing.T, svg string, scale int) image.Image {
	t.Helper()
	m := viewBox.FindStringSubmatch(svg)
	if m == nil {
		t.Fatalf("no viewBox in %.80s", svg)
	}
	n, _ := strconv.Atoi(m[1])
	img := image.NewGray(image.Rect(0, 0, n*scale, n*scale))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	d := svg[strings.Index(svg, ` d="`)+4:]
	d = d[:strings.Index(d, `"`)]
	runs := run.FindAllStringSubmatch(d, -1)
	if len(runs) == 0 || strings.Join(run.FindAllString(d, -1), "") != d {
		t.Fatalf("path is not made of module runs: %.80s", d)
	}
	for _, r := range runs {
		x, _ := strconv.Atoi(r[1])
		y, _ := strconv.Atoi(r[2])
		w, _ := strconv.Atoi(r[3])
		for px := x * scale; px < (x+w)*scale; px++ {
			for py := y * scale; py < (y+1)*scale; py++ {
				img.SetGray(px, py, color.Gray{})
			}
		}
	}
	return img
}
