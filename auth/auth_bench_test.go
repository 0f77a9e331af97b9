package auth

import (
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	v := testVerifier(b)
	tok, err := Mint(testKey1, Claims{
		Subject: "557058:acc-1", Site: testSite, Dash: "dash-1", Role: RoleSubscribe,
		IssuedAt: testNow, ExpiresAt: testNow.Add(time.Hour),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(tok)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, RoleSubscribe, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckSubscribe(b *testing.B) {
	c := Claims{Subject: "a", Site: testSite, Dash: "dash-1", Role: RoleSubscribe}
	ch := testSite + "/dash-1/gadget-1"
	b.ReportAllocs()
	for b.Loop() {
		if err := c.CheckSubscribe(ch); err != nil {
			b.Fatal(err)
		}
	}
}
