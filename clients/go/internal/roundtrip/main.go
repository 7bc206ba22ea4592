// Command roundtrip decodes and re-encodes RunEvents for the randomized
// cross-language test (tests/test_random_events.py).
//
// Each stdin line is `<hex of the binary encoding>\t<proto3 JSON>`. For
// each it writes one line: `<hex>\t<json>\t<hex>\t<json>`, the event decoded
// from binary re-encoded (deterministic binary, then JSON) and the event
// decoded from JSON re-encoded the same way; or `ERROR\t<message>`.
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		line, err := roundtrip(in.Text())
		if err != nil {
			line = "ERROR\t" + strings.NewReplacer("\t", " ", "\n", " ").Replace(err.Error())
		}
		fmt.Fprintln(out, line)
	}
}

func roundtrip(line string) (string, error) {
	hexText, jsonText, ok := strings.Cut(line, "\t")
	if !ok {
		return "", fmt.Errorf("no tab in the input line")
	}
	raw, err := hex.DecodeString(hexText)
	if err != nil {
		return "", err
	}
	fromBinary := &runwirev1.RunEvent{}
	if err := proto.Unmarshal(raw, fromBinary); err != nil {
		return "", fmt.Errorf("binary: %w", err)
	}
	fromJSON := &runwirev1.RunEvent{}
	if err := protojson.Unmarshal([]byte(jsonText), fromJSON); err != nil {
		return "", fmt.Errorf("json: %w", err)
	}
	var parts []string
	for _, ev := range []*runwirev1.RunEvent{fromBinary, fromJSON} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
		if err != nil {
			return "", err
		}
		j, err := protojson.Marshal(ev)
		if err != nil {
			return "", err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, j); err != nil {
			return "", err
		}
		parts = append(parts, hex.EncodeToString(b), compact.String())
	}
	return strings.Join(parts, "\t"), nil
}
