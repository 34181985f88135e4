package dataplane

import (
	"fmt"
	"math"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Each real's room under its upper threshold (bpf/maps.h real_room), for
// services flagged SvcRoom: how many more connections it may be given
// before IPVS would find it overloaded. XDP takes one for each new
// connection it binds there and sends the flow to Go when none is left;
// the server stores the room at each recount and takes one for each
// connection it binds itself. The map is memory-mapped, so both sides
// add atomically.

// RoomUnlimited is the room of a real without an upper threshold: more
// than any flood takes between two recounts.
const RoomUnlimited = math.MaxInt64 / 2

type roomView struct {
	mem  []byte
	room []int64
}

func (d *Dataplane) rooms() (*roomView, error) {
	d.roomOnce.Do(func() {
		mem, room, err := mmapWords[int64](d.objs.RealRoom)
		if err != nil {
			d.roomErr = fmt.Errorf("map the reals' room: %w", err)
			return
		}
		d.roomView = &roomView{mem: mem, room: room}
	})
	return d.roomView, d.roomErr
}

func (d *Dataplane) closeRooms() error {
	if d.roomView == nil {
		return nil
	}
	err := unix.Munmap(d.roomView.mem)
	d.roomView = nil
	return err
}

func (d *Dataplane) roomOf(id uint32) (*int64, error) {
	v, err := d.rooms()
	if err != nil {
		return nil, err
	}
	if id >= uint32(len(v.room)) {
		return nil, fmt.Errorf("real id %d out of range", id)
	}
	return &v.room[id], nil
}

// SetRoom stores real id's room (RoomUnlimited without a threshold).
func (d *Dataplane) SetRoom(id uint32, room int64) error {
	p, err := d.roomOf(id)
	if err != nil {
		return err
	}
	atomic.StoreInt64(p, room)
	return nil
}

// AddRoom adds n to real id's room (-1: a connection the server bound).
func (d *Dataplane) AddRoom(id uint32, n int64) error {
	p, err := d.roomOf(id)
	if err != nil {
		return err
	}
	atomic.AddInt64(p, n)
	return nil
}

// Room reads real id's room.
func (d *Dataplane) Room(id uint32) (int64, error) {
	p, err := d.roomOf(id)
	if err != nil {
		return 0, err
	}
	return atomic.LoadInt64(p), nil
}

// RealPicks is how many connections XDP has bound to real id (summed
// over CPUs) since the id was given to it.
func (d *Dataplane) RealPicks(id uint32) (uint64, error) {
	var per []uint64
	if err := d.objs.RealConns.Lookup(id, &per); err != nil {
		return 0, fmt.Errorf("read connections of real %d: %w", id, err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}
