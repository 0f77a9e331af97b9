package protocol

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkAppendMsg measures the per-publish encoding cost; data is
// JSON-ish, so its quotes take the escape path.
func BenchmarkAppendMsg(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		data := strings.Repeat(`{"k":"value"},`, size/14+1)[:size]
		b.Run(fmt.Sprintf("data=%dB", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var buf []byte
			for b.Loop() {
				buf = AppendMsg(buf[:0], "site:12345/class:678", "AddAbsence", data, 123456)
			}
		})
	}
}

// BenchmarkAppendString isolates the escaper on text with nothing to escape.
func BenchmarkAppendString(b *testing.B) {
	s := strings.Repeat("plain ascii text, é and 世界 ", 600)[:16<<10]
	b.ReportAllocs()
	b.SetBytes(int64(len(s)))
	var buf []byte
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}

func BenchmarkDecodeClient(b *testing.B) {
	for name, frame := range map[string]string{
		"sub":       `{"op":"sub","id":1,"ch":"site:12345/class:678"}`,
		"sub_since": `{"op":"sub","id":1,"ch":"site:12345/class:678","since":{"epoch":"k3j2h4","offset":41}}`,
		"refresh":   `{"op":"refresh","id":3,"token":"` + strings.Repeat("x", 400) + `"}`,
	} {
		in := []byte(frame)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := DecodeClient(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	in := []byte(`{"channel":"site:12345/class:678","event":"AddAbsence","data":"` + strings.Repeat(`{\"k\":\"v\"},`, 80) + `"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := DecodePublish(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBatch decodes a batch of 50 messages the way the edge
// does: the batch, then each element; "twice" validates each element
// again, as DecodePublish would.
func BenchmarkDecodeBatch(b *testing.B) {
	item := `{"channel":"site:12345/class:678/g1","event":"AddAbsence","data":"` + strings.Repeat("x", 64) + `"}`
	in := []byte(`{"messages":[` + strings.Repeat(item+",", 49) + item + `]}`)
	for _, c := range []struct {
		name   string
		decode func([]byte) (Publish, error)
	}{{"once", DecodeBatchItem}, {"twice", DecodePublish}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				msgs, err := DecodeBatch(in, 100)
				if err != nil {
					b.Fatal(err)
				}
				for _, m := range msgs {
					if _, err := c.decode(m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
