/*
** venus-pzem: Settings -> Integrations -> UI Plugins -> PZEM meters.
** One entry per USB RS-485 adapter that a dbus-pzem driver serves (its service
** com.victronenergy.pzem.<port>, on MQTT pzem/<port>); the adapter's page lists its meters.
*/

import QtQuick
import Victron.VenusOS

Page {
	id: root

	//% "PZEM meters"
	title: qsTrId("pzem_meters_title")
	// gui-v2 lists a UI plugin by its name (PzemMeters: the JSON file's name) and opens its page
	// with that name as the title; a type-1 integration has no title of its own. The page then
	// names itself.
	Component.onCompleted: title = qsTrId("pzem_meters_title")

	GradientListView {
		id: portList

		header: PrimaryListLabel {
			preferredVisible: portList.count === 0
			//% "No PZEM driver is running. Connect the USB RS-485 adapter with the meters: the driver starts on it by itself, and the adapter shows up here."
			text: qsTrId("pzem_meters_no_driver")
		}

		model: VeQItemSortTableModel {
			dynamicSortFilter: true
			filterFlags: VeQItemSortTableModel.FilterInvalid
			model: VeQItemChildModel {
				childId: "Identifier"
				model: VeQItemFilteredServiceModel { serviceTypes: ["pzem"] }
			}
		}

		delegate: ListNavigation {
			id: portEntry

			readonly property string portUid: model.item.itemParent().uid

			//% "Adapter %1"
			text: qsTrId("pzem_meters_adapter").arg(portName.valid ? portName.value : model.item.value)
			//% "%1 of %2 meters answering"
			secondaryText: qsTrId("pzem_meters_answering_count")
					.arg(answering.valid ? answering.value : 0).arg(listed.valid ? listed.value : 0)
			onClicked: Global.pageManager.pushPage("qrc:/PzemMeters/PzemMeters_Port.qml",
					{ "portUid": portEntry.portUid, "title": text })

			VeQuickItem {
				id: portName
				uid: portEntry.portUid + "/Port"
			}
			VeQuickItem {
				id: listed
				uid: portEntry.portUid + "/Counts/Listed"
			}
			VeQuickItem {
				id: answering
				uid: portEntry.portUid + "/Counts/Answering"
			}
		}
	}
}
