/*
** venus-pzem: what became of the last request to a port (/Action/*), shown until the next one.
*/

import QtQuick
import Victron.VenusOS

ListText {
	id: root

	property string portUid
	// the request's address, or -1 for the port's own requests (search, pin)
	property int address: -1

	//% "Last request"
	text: qsTrId("pzem_meters_last_request")
	secondaryText: words.request(stateItem.value, messageItem.value || "")
	preferredVisible: stateItem.valid && stateItem.value > 0
			&& (root.address < 0 || addressItem.value === root.address)

	PzemMeters_Words { id: words }

	VeQuickItem {
		id: stateItem
		uid: root.portUid + "/Action/State"
	}
	VeQuickItem {
		id: messageItem
		uid: root.portUid + "/Action/Message"
	}
	VeQuickItem {
		id: addressItem
		uid: root.portUid + "/Action/Address"
	}
}
