// proto_compat checks that lustrekit's csi.proto is wire-compatible with the upstream CSI spec
// (github.com/container-storage-interface/spec v1.12.0): every service, method, message,
// field (name, number, type, label, oneof) and enum value upstream has must exist in ours
// with the same shape, and ours must have nothing upstream lacks.
//
// Usage: go run . <csi_descriptor.bin>   (the encoded FileDescriptorSet that build.rs writes)
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func describeFile(fd protoreflect.FileDescriptor) map[string]string {
	out := map[string]string{}
	var msg func(m protoreflect.MessageDescriptor)
	enum := func(e protoreflect.EnumDescriptor) {
		for i := 0; i < e.Values().Len(); i++ {
			v := e.Values().Get(i)
			out[string(v.FullName())] = fmt.Sprintf("enum value %d", v.Number())
		}
	}
	msg = func(m protoreflect.MessageDescriptor) {
		out[string(m.FullName())] = "message"
		for i := 0; i < m.Fields().Len(); i++ {
			f := m.Fields().Get(i)
			typ := f.Kind().String()
			if f.Message() != nil {
				typ = string(f.Message().FullName())
			}
			if f.Enum() != nil {
				typ = string(f.Enum().FullName())
			}
			oneof := ""
			if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
				oneof = string(o.Name())
			}
			secret := false
			if opts, ok := f.Options().(*descriptorpb.FieldOptions); ok && opts != nil {
				secret, _ = proto.GetExtension(opts, csi.E_CsiSecret).(bool)
			}
			out[string(f.FullName())] = fmt.Sprintf("field %d %s %s oneof=%q json=%s secret=%v", f.Number(), f.Cardinality(), typ, oneof, f.JSONName(), secret)
		}
		for i := 0; i < m.Messages().Len(); i++ {
			msg(m.Messages().Get(i))
		}
		for i := 0; i < m.Enums().Len(); i++ {
			enum(m.Enums().Get(i))
		}
	}
	for i := 0; i < fd.Messages().Len(); i++ {
		msg(fd.Messages().Get(i))
	}
	for i := 0; i < fd.Enums().Len(); i++ {
		enum(fd.Enums().Get(i))
	}
	for i := 0; i < fd.Services().Len(); i++ {
		s := fd.Services().Get(i)
		out[string(s.FullName())] = "service"
		for j := 0; j < s.Methods().Len(); j++ {
			m := s.Methods().Get(j)
			out[string(m.FullName())] = fmt.Sprintf("rpc %s -> %s stream=%v/%v", m.Input().FullName(), m.Output().FullName(), m.IsStreamingClient(), m.IsStreamingServer())
		}
	}
	for i := 0; i < fd.Extensions().Len(); i++ {
		x := fd.Extensions().Get(i)
		out[string(x.FullName())] = fmt.Sprintf("extension %d of %s %s", x.Number(), x.ContainingMessage().FullName(), x.Kind())
	}
	return out
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: proto_compat <csi_descriptor.bin>")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		panic(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		panic(err)
	}
	ours, err := files.FindFileByPath("csi.proto")
	if err != nil {
		panic(err)
	}
	want := describeFile(csi.File_csi_proto)
	got := describeFile(ours)
	var problems []string
	for k, v := range want {
		if got[k] != v {
			problems = append(problems, fmt.Sprintf("%s: upstream %q, ours %q", k, v, got[k]))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s: only ours has it (%q)", k, v))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Printf("%d differences from CSI spec v1.12.0\n", len(problems))
		os.Exit(1)
	}
	secrets := 0
	for _, v := range got {
		if strings.HasSuffix(v, "secret=true") {
			secrets++
		}
	}
	fmt.Printf("csi.proto matches CSI spec v1.12.0: %d descriptors compared, %d csi_secret fields\n", len(want), secrets)
}
